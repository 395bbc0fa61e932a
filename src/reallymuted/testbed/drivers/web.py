"""The real web apps in Chromium, driven by Playwright (``source`` = ``web``).

The paper tested the web-only app/OS combinations in Chromium on Linux. This driver opens the
app's meeting page (``join_url`` of the registry, ``workflow/apps.yaml``, with ``{meeting}``
and ``{site}`` from the config) in the system Chromium, inside the Linux testbed's session:
the same PulseAudio pipe microphone, the same OS- and app-level witnesses, the same Frida
tracing of Chromium's audio service. Unlike every testbed client it needs the internet and an
account, so:

* the driver declares ``network = "internet"``: the supervisor checks from the host that the
  app's server answers a verified TLS handshake and refuses the session at preflight if not,
  then gives the namespace an uplink (:mod:`reallymuted.testbed.uplink`), and the capture runs
  on that uplink interface (``capture_interface``);
* the option ``profile_dir`` names a Chromium profile signed in to the app (copied into the
  session, so the session never writes to it).

Steps: ``prepare`` loads the meeting page (its pre-join screen: the app may open the microphone
there, before ``join``, and the trace shows it); ``join`` clicks the join button (option
``join_button``, else a button named like "Join now"/"Ask to join") and waits for the in-meeting
mute button (registry ``mute_button``); ``set_muted`` presses the app's shortcut (registry
``mute_hotkey``, mode ``hotkey``) or clicks the button (mode ``button``), falls back to the
button when the shortcut changes nothing, and confirms the state from the button's label
("Unmute ..." / "Turn on microphone ..." = muted). Each mute event also records, app-independently,
what WebRTC sends: an init script keeps the page's RTCPeerConnections and microphone tracks in
view (``track.enabled``, the senders' tracks) without changing them. ``leave`` navigates away.

None of this has been run against the real web apps yet (docs/apps.md); the offline
test drives it against a local page that mimics an app's controls.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any, ClassVar

from reallymuted.testbed.drivers import Driver, DriverError, close_quietly
from reallymuted.testbed.drivers.chromium import BINARY, connect_over_cdp, launch_chromium
from reallymuted.testbed.drivers.hotkeys import Hotkey, parse_hotkey
from reallymuted.testbed.drivers.native import registry_entry

OPTIONS = {
    "registry_app",  # the app's id in workflow/apps.yaml
    "meeting",  # {meeting} of the join URL
    "site",  # {site} of the join URL (Webex)
    "join_url",  # a URL template used instead of the registry's
    "profile_dir",  # a Chromium user-data-dir signed in to the app (copied per session)
    "display_name",  # typed into the pre-join name field, when the app asks for one
    "name_field",  # CSS selector of that field (default: the first visible text input)
    "join_button",  # selector of the pre-join "Join" button (default: by its name)
    "join_timeout_s",  # how long joining (admission included) may take
    "headless",  # run Chromium headless (default true; false needs a display)
    "cdp_port",  # DevTools port (harness channel, on the namespace's loopback)
    "dns",  # resolvers for the namespace (reallymuted.testbed.uplink), when the host's are loopback
}

FLAGS = (
    "--no-sandbox",  # running as root
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-sync",
    "--disable-extensions",
    "--disable-gpu",
    "--use-fake-ui-for-media-stream",  # grant the microphone prompt (the device is real)
    "--autoplay-policy=no-user-gesture-required",
    "--enable-logging=stderr",
)

JOIN_NAMES = re.compile(
    r"^\s*(join( now| meeting| call| as guest)?|ask to join|join huddle)\s*$", re.I
)
MUTED_LABEL = re.compile(
    r"\bunmute\b|turn on (the )?mic(rophone)?|(microphone|mic) (is )?(off|muted)|start audio",
    re.I,
)
UNMUTED_LABEL = re.compile(
    r"\bmute\b|turn off (the )?mic(rophone)?|(microphone|mic) (is )?on|stop audio", re.I
)

# Playwright's names for the registry's modifiers (Cmd and Meta are both the Meta key).
PLAYWRIGHT_MODIFIERS = {"Ctrl": "Control", "Alt": "Alt", "Shift": "Shift", "Cmd": "Meta"}
PLAYWRIGHT_MODIFIERS["Meta"] = "Meta"

# Keeps the page's peer connections and microphone tracks in view (weakly: nothing is kept
# alive or changed), so a mute can be checked at the WebRTC level whatever the app's UI says.
OBSERVER_JS = r"""
(() => {
  if (window.__reallymuted) return;
  const pcs = [];
  const tracks = [];
  const Native = window.RTCPeerConnection;
  if (Native) {
    const Observed = function (...args) {
      const pc = new Native(...args);
      pcs.push(new WeakRef(pc));
      return pc;
    };
    Observed.prototype = Native.prototype;
    Object.setPrototypeOf(Observed, Native);
    window.RTCPeerConnection = Observed;
    if (window.webkitRTCPeerConnection) window.webkitRTCPeerConnection = Observed;
  }
  const md = navigator.mediaDevices;
  if (md && md.getUserMedia) {
    const gum = md.getUserMedia.bind(md);
    md.getUserMedia = async (constraints) => {
      const stream = await gum(constraints);
      for (const t of stream.getAudioTracks()) tracks.push(new WeakRef(t));
      return stream;
    };
  }
  const alive = (refs) => refs.map((r) => r.deref()).filter((x) => x !== undefined);
  window.__reallymuted = {
    state() {
      const audioSenders = [];
      for (const pc of alive(pcs)) {
        if (pc.connectionState === 'closed') continue;
        for (const s of pc.getSenders()) {
          if (s.track && s.track.kind !== 'audio') continue;
          audioSenders.push({
            track: s.track ? s.track.id : null,
            enabled: s.track ? s.track.enabled : null,
            readyState: s.track ? s.track.readyState : null,
            connection: pc.connectionState,
          });
        }
      }
      return {
        peer_connections: alive(pcs).length,
        tracks: alive(tracks).map((t) => ({
          id: t.id, enabled: t.enabled, muted: t.muted, readyState: t.readyState,
        })),
        senders: audioSenders,
      };
    },
    async ports() {
      const ports = [];
      for (const pc of alive(pcs)) {
        if (pc.connectionState === 'closed') continue;
        const stats = await pc.getStats();
        stats.forEach((r) => {
          if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') {
            const local = stats.get(r.localCandidateId);
            if (local && local.port) ports.push(local.port);
          }
        });
      }
      return ports;
    },
  };
})();
"""


def playwright_keys(hotkey: Hotkey) -> str:
    """The hotkey as Playwright's ``keyboard.press`` text, e.g. ``Control+Shift+KeyM``."""
    if hotkey.key == "Space" or hotkey.is_function_key:
        key = hotkey.key
    elif hotkey.key.isdigit():
        key = f"Digit{hotkey.key}"
    else:
        key = f"Key{hotkey.key}"
    return "+".join([*(PLAYWRIGHT_MODIFIERS[m] for m in hotkey.modifiers), key])


def button_state(label: str | None) -> bool | None:
    """Muted (True), unmuted (False) or unknown (None), from a mute button's label.

    A toggle's label names what it will do: "Unmute"/"Turn on microphone" while muted,
    "Mute"/"Turn off microphone" while unmuted.
    """
    if not label:
        return None
    if MUTED_LABEL.search(label):
        return True
    if UNMUTED_LABEL.search(label):
        return False
    return None


def join_url(entry: Mapping[str, Any], options: Mapping[str, Any]) -> tuple[str, str]:
    """(meeting URL, where its template came from: config or registry)."""
    template, via = (
        (str(options["join_url"]), "config")
        if options.get("join_url")
        else (entry["join_url"], "registry")
    )
    fields = {
        k: urllib.parse.quote(str(options.get(k) or ""), safe="/:@") for k in ("meeting", "site")
    }
    return template.format(**fields), via


class WebAppDriver(Driver):
    name = "web"
    source: ClassVar[str] = "web"
    modes = ("hotkey", "button")
    options: ClassVar[frozenset[str] | None] = frozenset(OPTIONS)
    programs = ("chromium",)
    network: ClassVar[str] = (
        "internet"  # the supervisor adds an uplink (reallymuted.testbed.uplink)
    )
    capture_interface: ClassVar[str] = "uplink0"  # = reallymuted.testbed.uplink.NS_IF
    # as for the testbed's Chromium: renderers, GPU process and zygotes cannot open devices
    trace_skip = ("--type=renderer", "--type=gpu-process", "--type=zygote")
    reads_while_preparing = True  # a pre-join screen may open the microphone (a preview)

    @classmethod
    def check(cls, mode: str, options: Mapping[str, Any]) -> None:
        super().check(mode, options)
        entry = registry_entry(options, "web")
        parse_hotkey(entry["mute_hotkey"], "web")

    @classmethod
    def internet_hosts(cls, options: Mapping[str, Any]) -> list[str]:
        """The servers a session must reach: the meeting page's host (checked at preflight,
        after the options a real meeting needs)."""
        entry = registry_entry(options, "web")
        template = str(options.get("join_url") or entry["join_url"])
        for key in ("meeting", "site"):
            if "{" + key + "}" in template and not options.get(key):
                raise ValueError(f"driver web: set the option `{key}` for {entry['name']}")
        url, _ = join_url(entry, options)
        host = urllib.parse.urlsplit(url).hostname
        return [host] if host else []

    @classmethod
    def version(cls, options: Mapping[str, Any]) -> str:
        out = subprocess.run([BINARY, "--version"], capture_output=True, text=True, check=False)
        return out.stdout.strip() or "unknown"

    @property
    def entry(self) -> dict[str, Any]:
        return registry_entry(self.ctx.options, "web")

    @property
    def hotkey(self) -> Hotkey:
        return parse_hotkey(self.entry["mute_hotkey"], "web")

    @property
    def cdp_port(self) -> int:
        return int(self.ctx.options.get("cdp_port", 9222))

    def capture_filter(self) -> str:
        return f"not (tcp port {self.cdp_port})"

    def endpoints(self) -> dict[str, Any]:
        return {
            "meeting_page": getattr(self, "url", None),
            "harness": {"cdp": f"127.0.0.1:{self.cdp_port}"},
        }

    def client_traffic(self) -> dict[str, Any]:
        return {"ports": sorted(set(getattr(self, "media_ports", [])))}

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        profile = self.ctx.workdir / "chromium-profile"
        if self.ctx.options.get("profile_dir"):
            shutil.copytree(str(self.ctx.options["profile_dir"]), profile, symlinks=True)
        argv = [BINARY, *FLAGS, f"--user-data-dir={profile}"]
        if self.ctx.options.get("headless", True):
            argv.append("--headless")
        argv += [f"--remote-debugging-port={self.cdp_port}", "about:blank"]
        self.proc = launch_chromium(self, argv)

    def trace_roots(self) -> list[int]:
        return [self.proc.pid]

    def prepare(self) -> None:
        """Connect over CDP and load the meeting page (the app's pre-join screen)."""
        self.pw, self.browser = connect_over_cdp(self.proc, self.cdp_port)
        context = self.browser.contexts[0]
        context.add_init_script(OBSERVER_JS)
        self.page = context.pages[0] if context.pages else context.new_page()
        console = self.log_file("page-console").open("a", buffering=1)
        self.console = console
        self.page.on(
            "console", lambda m: console.write(f"{time.monotonic():.6f} {m.type}: {m.text}\n")
        )
        self.url, self.url_via = join_url(self.entry, self.ctx.options)
        self.page.goto(self.url, wait_until="load", timeout=60000)
        self.ctx.event("page_ready", url=self.url, via=self.url_via)

    @property
    def join_timeout_s(self) -> float:
        return float(self.ctx.options.get("join_timeout_s", 60))

    def mute_button(self) -> Any:
        """The first visible element matching the registry's mute-button selector."""
        return self.page.locator(self.entry["mute_button"]).locator("visible=true").first

    def state(self) -> dict[str, Any]:
        """What the page shows: the mute button's label and state, and WebRTC's view."""
        button = self.mute_button()
        label = pressed = None
        if button.count():
            label = button.get_attribute("aria-label") or button.inner_text()
            pressed = button.get_attribute("aria-pressed")
        webrtc = self.page.evaluate("window.__reallymuted ? window.__reallymuted.state() : null")
        return {
            "label": label,
            "aria_pressed": pressed,
            "muted": button_state(label),
            "webrtc": webrtc,
        }

    def join(self) -> dict[str, Any]:
        options = self.ctx.options
        if options.get("display_name"):
            field = (
                self.page.locator(str(options.get("name_field") or "input[type=text]"))
                .locator("visible=true")
                .first
            )
            if field.count():
                field.fill(str(options["display_name"]))
        if options.get("join_button"):
            button = self.page.locator(str(options["join_button"]))
        else:
            button = self.page.get_by_role("button", name=JOIN_NAMES)
        timeout_ms = self.join_timeout_s * 1000
        try:
            button.first.click(timeout=timeout_ms)
            # In the meeting once the pre-join screen is gone (it often has a mute toggle of
            # its own) and the control bar's mute button is there; admission by a host counts
            # towards the same timeout.
            button.first.wait_for(state="hidden", timeout=timeout_ms)
            self.mute_button().wait_for(state="visible", timeout=timeout_ms)
        except Exception as exc:
            raise DriverError(f"could not join {self.entry['name']}: {exc}") from exc
        state = self.state()
        extra: dict[str, Any] = {"url": self.url, "via": self.url_via, "state": state}
        if state["muted"]:  # the schedule starts unmuted; some apps join muted
            extra["unmuted_at_join"] = self._toggle_until(False)
        self.media_ports = self.page.evaluate(
            "window.__reallymuted ? window.__reallymuted.ports() : []"
        )
        return extra

    def _press(self, method: str) -> None:
        if method == "hotkey":
            # key events go to the focused element: not a chat box that would eat them
            self.page.evaluate("document.activeElement && document.activeElement.blur()")
            self.page.keyboard.press(playwright_keys(self.hotkey))
        else:
            self.mute_button().click(timeout=5000)

    def _wait_state(self, muted: bool, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if state["muted"] is muted or time.monotonic() > deadline:
                return state
            time.sleep(0.1)

    def _toggle_until(self, muted: bool) -> dict[str, Any]:
        """Press the shortcut (mode hotkey) or the button; the button again only if the page
        shows the shortcut changed nothing (an unreadable state is never pressed twice)."""
        methods = ["hotkey", "button"] if self.ctx.mode == "hotkey" else ["button"]
        state: dict[str, Any] = {}
        for i, method in enumerate(methods):
            self._press(method)
            state = self._wait_state(muted, timeout=3.0)
            result = {"method": method, "fallback": i > 0, "state": state}
            if state["muted"] is muted:
                return {**result, "confirmed": True}
            if state["muted"] is None:  # the label cannot be read: say so, do not guess
                return {**result, "confirmed": False}
        raise DriverError(
            f"{self.entry['name']} did not reach muted={muted} "
            f"(tried {', '.join(methods)}; button label {state.get('label')!r})"
        )

    def set_muted(self, muted: bool) -> dict[str, Any]:
        return self._toggle_until(muted)

    def leave(self) -> dict[str, Any]:
        self.page.goto("about:blank")
        return {"method": "navigate away"}

    def stop(self) -> None:
        close_quietly(
            lambda: self.browser.close(),
            lambda: self.ctx.procs.stop(self.proc, timeout=5.0),
            lambda: self.pw.stop(),
            lambda: self.console.close(),
        )
