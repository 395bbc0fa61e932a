"""A vendor's own client library, unchanged, on the local meeting page (``source`` = ``sdk``).

The page (``web/sdk.html?sdk=NAME``) loads the harness (``web/sdk-harness.js``), the vendor's
bundle (``/vendor/NAME.js``, built by :mod:`reallymuted.testbed.sdk` from the npm registry)
and the project's glue (``web/sdk/NAME.js``), which starts the SDK's microphone the way the
vendor's documentation does and mutes with the SDK's own call. Capture, PulseAudio microphone
and Frida tracing are the Chromium driver's, so the two microphone witnesses see the SDK's
reads like any other client's.

What the driver adds:

* **whose mute it was**: the harness logs every ``enabled`` assignment, ``stop()`` and
  ``replaceTrack`` with the script that made it. A mute or unmute whose track change came
  from the page (the glue or the harness) and not from ``/vendor/`` fails the session: the
  evidence would be the project's mute, not the vendor's. A mute that changed no track at all
  is recorded (``track_untouched``), not failed: that is what the SDK did;
* **nothing leaves loopback**: the namespace has only ``lo``; Chromium resolves no name but
  127.0.0.1; the harness sends fetch, XHR, beacon and WebSocket calls to the collector, which
  logs them (``collector.jsonl``), beside the records the page posts for the vendor's
  telemetry producers (Webex's stats analyzer);
* **provenance**: each package's name, version, licence and lock integrity, and the bundle's
  sha256, in the manifest (``client_code``).

Zoom's Video SDK can only run its pre-join preview offline: its driver is ``sdk-preview`` and
its rows say so.
"""

from __future__ import annotations

import http.server
from collections.abc import Mapping
from typing import Any, ClassVar

from reallymuted.testbed import sdk as vendor
from reallymuted.testbed.drivers import DriverError
from reallymuted.testbed.drivers.chromium import ChromiumDriver, PageHandler
from reallymuted.testbed.drivers.collecting import COLLECTOR_LOG, CollectorClient

RESOURCES = (
    "../web/sdk.html",
    "../web/sdk-harness.js",
    "../web/webrtc-loopback.js",
    "../web/sdk/webex.js",  # the project's glue, one per vendor.SDKS entry
    "../web/sdk/whereby.js",
    "../web/sdk/zoom.js",
    "../web/sdk/livekit.js",
    "../web/sdk/twilio.js",
    "/envs/sdk/package-lock.json",
)
OPTIONS = {"sdk", "registry_app", "collector_port", "cdp_port", "page_port"}
# Track changes that mute: made by anything but the vendor's bundle, they are not the SDK's.
MUTING = ("track_enabled", "track_stop", "replace_track")


class _VendorHandler(PageHandler):
    """The page's folder, with the built bundles under /vendor/."""

    def translate_path(self, path: str) -> str:
        if path.startswith("/vendor/"):
            sub = path.split("?", 1)[0].split("#", 1)[0].removeprefix("/vendor/")
            target = (vendor.BUNDLES / sub).resolve()
            if vendor.BUNDLES.resolve() in target.parents:
                return str(target)
            return str(vendor.BUNDLES / "missing")
        return super().translate_path(path)


def foreign_operations(operations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The track changes of a call that the vendor's bundle did not make."""
    return [
        op
        for op in operations
        if op["event"] in MUTING
        and not str(op.get("caller", "")).startswith("/vendor/")
        and not op.get("plumbing")
    ]


class SdkDriver(CollectorClient, ChromiumDriver):
    name = "sdk"
    source = "sdk"
    modes = tuple(dict.fromkeys(m for s in vendor.SDKS.values() for m in s.modes))
    extra_evidence = (COLLECTOR_LOG,)
    options: ClassVar[frozenset[str] | None] = frozenset(OPTIONS)
    page_functions: ClassVar[dict[str, str]] = {
        "join": "sdkJoin",
        "set_muted": "sdkSetMuted",
        "leave": "sdkLeave",
    }
    extra_flags: ClassVar[tuple[str, ...]] = (
        # the SDKs' timers (stats analyzers, level meters) run as in a visible tab
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
        # no name resolves but loopback: a request the harness missed fails at once
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    )

    @classmethod
    def sdk_of(cls, options: Mapping[str, Any]) -> vendor.Sdk:
        name = options.get("sdk")
        if name not in vendor.SDKS:
            raise ValueError(f"driver {cls.name}: option sdk={name!r} not in {sorted(vendor.SDKS)}")
        return vendor.SDKS[str(name)]

    @classmethod
    def check(cls, mode: str, options: Mapping[str, Any]) -> None:
        super().check(mode, options)
        sdk = cls.sdk_of(options)
        if sdk.source != cls.source:
            raise ValueError(f"driver {cls.name}: sdk {sdk.name} runs as driver {sdk.source}")
        if mode not in sdk.modes:
            raise ValueError(f"driver {cls.name}: sdk {sdk.name} has modes {sdk.modes}, not {mode}")
        registry_app = options.get("registry_app")
        if registry_app is not None and registry_app != sdk.registry_app:
            raise ValueError(
                f"driver {cls.name}: sdk {sdk.name} is the code of {sdk.registry_app!r}, "
                f"not {registry_app!r}"
            )

    @classmethod
    def client_code(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        sdk = cls.sdk_of(options)
        try:
            record = vendor.provenance(sdk.name)
        except vendor.SdkSetupError as exc:
            raise DriverError(str(exc)) from exc
        return {"sdk": sdk.name, **record}

    @classmethod
    def check_programs(cls) -> None:
        super().check_programs()
        if not vendor.PROVENANCE.is_file():
            raise DriverError(f"driver {cls.name}: no SDK bundles; run `make setup`")

    @property
    def sdk(self) -> vendor.Sdk:
        return self.sdk_of(self.ctx.options)

    @property
    def page_url(self) -> str:
        return (
            f"http://127.0.0.1:{self.page_port}/sdk.html?sdk={self.sdk.name}"
            f"&collector={self.collector_port}"
        )

    def _handler(self) -> type[http.server.SimpleHTTPRequestHandler]:
        return _VendorHandler

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        self.client_code(self.ctx.options)  # a missing or stale bundle fails before Chromium
        super().start()

    def join_options(self) -> dict[str, Any]:
        return {"mode": self.ctx.mode}

    def join(self) -> dict[str, Any]:
        result = self._call(self.page_functions["join"], self.join_options())
        self.media = result.get("media")
        self.level_ext_id = result.get("audio_level_ext_id")
        if self.media is None and result.get("transport") is not None:
            raise DriverError(f"{self.sdk.name}: joined, but no selected ICE candidate pair")
        return self._checked("join", result)

    def set_muted(self, muted: bool) -> dict[str, Any]:
        result = super().set_muted(muted)
        return self._checked("mute" if muted else "unmute", result)

    def leave(self) -> dict[str, Any]:
        return self._call(self.page_functions["leave"])

    def _checked(self, call: str, result: dict[str, Any]) -> dict[str, Any]:
        """Fail if the page, not the vendor's code, changed the microphone track in ``call``."""
        foreign = foreign_operations(result.get("operations", []))
        if foreign and call != "join":
            made = ", ".join(f"{op['event']} {op.get('track')} by {op['caller']}" for op in foreign)
            raise DriverError(
                f"{self.sdk.name} {call}: the page, not the SDK, changed the microphone ({made})"
            )
        muting = [op for op in result.get("operations", []) if op["event"] in MUTING]
        return {**result, "track_untouched": not muting, "by_vendor": not foreign}


class SdkPreviewDriver(SdkDriver):
    """An SDK of which only the pre-join preview runs offline (Zoom's Video SDK)."""

    name = "sdk-preview"
    source = "sdk-preview"
