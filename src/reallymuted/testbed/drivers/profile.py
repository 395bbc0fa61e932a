"""Testbed profiles: the local meeting page running one app's *published* mute behaviour.

A profile is the Chromium driver on ``web/profile.html`` (the meeting page plus
``web/profile.js``), with one behaviour selected by the ``profile`` option; it is driven,
captured and traced exactly like any other client, so the instrument can be shown to detect
each behaviour the paper describes (PAPER.md M1-M3, T1). It is a model of the app, measured for
real, never the app itself: its manifest says ``source: testbed-profile``.

=====================  =========================================================================
profile                what the page does while muted
=====================  =========================================================================
``webex-2021``         M1 + T1: sent audio stopped (``replaceTrack(null)``); the microphone is
                       still read, every sample, by the page's own audio graph, and every
                       ``telemetry_interval_s`` a Webex-format ``wmequality`` record with the
                       interval's gain statistics is POSTed to the telemetry collector
``zoom-native``        M2: sent audio stopped (``replaceTrack(null)``); the microphone stays open
                       and is looked at only enough to show a local "you are muted" notice
                       (a level check every 100 ms); nothing derived from it is sent
``native-flags-only``  M2 for Slack, BlueJeans, GoTo Meeting (native): as ``zoom-native`` without
                       the notice; nothing in the page reads the samples
``webrtc-soft-mute``   M3, the web apps (Meet, Jitsi, Whereby, Discord web…):
                       ``track.enabled = false``; RTP goes on, carrying silence
=====================  =========================================================================

Modelling choices, where the paper is silent: it does not say what the native apps put on the
wire while muted, only that they do not read raw audio (M2) or, for Webex, that the telemetry
carries gain statistics (T1). The native profiles therefore stop the sent audio
(``replaceTrack(null)``: no RTP), which leaves the telemetry as the only audio-derived data of
``webex-2021`` and nothing at all for the other two; the alternative (RTP carrying silence) is
what ``webrtc-soft-mute`` shows. Zoom's notice comes from WASAPI's SILENT buffer flag (M2), which
a page does not have: the nearest a page can do is a coarse level check on a clone of the
track. A Chromium page cannot read "flags only": while a track is live, Chromium's audio
service reads every sample from the device, so at the OS and libpulse witnesses all four
profiles keep reading while muted; what tells them apart is what the page does with the samples
and what leaves the machine.

Teams/Skype on Windows (M4, not determined by the paper) get no profile.

Every profile session also runs the project's telemetry collector
(:mod:`reallymuted.testbed.collector`) on ``collector_port`` in the session's namespace: for
``webex-2021`` it receives the records; for the others its log shows that nothing arrived. Its
log is published as the extra evidence file ``collector.jsonl``.

The one mute mode is ``app``: the app's own mute, whatever it does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from reallymuted.study import DEFAULT_INTERVAL_S, TELEMETRY_PROFILES
from reallymuted.testbed.drivers.chromium import ChromiumDriver
from reallymuted.testbed.drivers.collecting import COLLECTOR_LOG, CollectorClient

RESOURCES = ("../web/profile.html", "../web/profile.js", "../web/gain-worklet.js")
PROFILES = ("webex-2021", "zoom-native", "native-flags-only", "webrtc-soft-mute")
COLLECTOR_PATH = "/wmequality"


class ProfileDriver(CollectorClient, ChromiumDriver):
    name = "profile"
    modes = ("app",)
    source = "testbed-profile"
    extra_evidence = (COLLECTOR_LOG,)
    page_functions: ClassVar[dict[str, str]] = {
        "join": "profileJoin",
        "set_muted": "profileSetMuted",
        "leave": "profileLeave",
    }
    # Timers drive the telemetry intervals: keep Chromium from throttling them (a headless
    # page can count as hidden, and hidden pages get their timers batched to once a minute).
    extra_flags: ClassVar[tuple[str, ...]] = (
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
    )

    @classmethod
    def check(cls, mode: str, options: Mapping[str, Any]) -> None:
        super().check(mode, options)
        profile = options.get("profile")
        if profile not in PROFILES:
            raise ValueError(f"driver profile: option profile={profile!r} not in {PROFILES}")
        if "telemetry_interval_s" in options:
            if profile not in TELEMETRY_PROFILES:
                raise ValueError(
                    f"driver profile: telemetry_interval_s applies to {TELEMETRY_PROFILES} only"
                )
            interval = options["telemetry_interval_s"]
            if not isinstance(interval, int | float) or isinstance(interval, bool):
                raise ValueError("driver profile: telemetry_interval_s must be a number")
            if interval <= 0:
                raise ValueError("driver profile: telemetry_interval_s must be > 0")

    @property
    def profile(self) -> str:
        return str(self.ctx.options["profile"])

    @property
    def page_url(self) -> str:
        return f"http://127.0.0.1:{self.page_port}/profile.html"

    @property
    def telemetry_interval_s(self) -> float:
        return float(self.ctx.options.get("telemetry_interval_s", DEFAULT_INTERVAL_S))

    @property
    def collector_url(self) -> str:
        return self.collector_base + COLLECTOR_PATH

    # -- life cycle -----------------------------------------------------------------------
    def join_options(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "telemetry_interval_s": self.telemetry_interval_s,
            "collector_url": self.collector_url,
        }
