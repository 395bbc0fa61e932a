"""Chromium (WebRTC) on the local two-party meeting page, driven by Playwright.

Chromium is started by us (so its PID, process group and output are ours) with the system
binary, headless, with the no-network flags, ``--allow-loopback-in-peer-connection`` (else a
loopback-only namespace gathers no ICE candidates) and no fake-device flags: the microphone is
the session's PulseAudio pipe source, reached through ``PULSE_SERVER``, so the real capture
path (audio service -> libpulse) is exercised and traced. Playwright attaches over CDP; the
CDP port is the harness's control channel and is kept out of the capture.

Mute modes (see ``web/meeting.js``): ``soft`` (track.enabled = false), ``replace``
(sender.replaceTrack(null)), ``stop`` (track.stop(), new getUserMedia to unmute); a
``-detector`` suffix adds a "you are muted" detector analysing an enabled clone of the track.
"""

from __future__ import annotations

import functools
import http.server
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from reallymuted.testbed.drivers import Driver, DriverError, close_quietly, wait_for_exec

WEB = Path(__file__).resolve().parents[1] / "web"
# what it serves: its code too
RESOURCES = ("../web/meeting.html", "../web/meeting.js", "../web/webrtc-loopback.js")
BINARY = "/usr/bin/chromium"
MUTES = ("soft", "replace", "stop")

FLAGS = (
    "--headless",
    "--no-sandbox",  # running as root
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-extensions",
    "--use-fake-ui-for-media-stream",  # grant the microphone without a prompt (the real one)
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--enable-logging=stderr",
)


def launch_chromium(driver: Driver, argv: list[str]) -> Any:
    """Start Chromium as ``driver``'s client and wait until it is the browser itself."""
    # TMPDIR: Chromium's singleton socket and shared-memory files go to the session's
    # scratch directory (deleted with it) rather than /tmp.
    tmp = driver.ctx.workdir / "chromium-tmp"
    tmp.mkdir(exist_ok=True)
    env = dict(driver.ctx.env, HOME=str(driver.ctx.workdir), TMPDIR=str(tmp))
    proc = driver.start_process("client", argv, "chromium", env=env)
    # /usr/bin/chromium is a shell wrapper that execs the browser: attaching the tracer
    # before that exec would trace the shell.
    wait_for_exec(proc.pid, "chromium", timeout=10.0)
    return proc


def connect_over_cdp(proc: Any, port: int, timeout_s: float = 20.0) -> tuple[Any, Any]:
    """Playwright and the browser, connected over CDP to the Chromium ``proc`` started with
    ``--remote-debugging-port=port`` (retried until it listens, or it exits)."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return pw, pw.chromium.connect_over_cdp(f"http://127.0.0.1:{port}", timeout=5000)
        except PlaywrightError as exc:
            if proc.returncode() is not None or time.monotonic() > deadline:
                pw.stop()
                raise DriverError(f"cannot reach Chromium over CDP: {exc}") from exc
            time.sleep(0.1)


class PageHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the meeting page; access log to a file instead of the runner's stderr."""

    log_path: Path

    def log_message(self, format: str, *args: Any) -> None:
        with self.log_path.open("a") as fh:
            fh.write(f"{time.monotonic():.6f} {self.address_string()} {format % args}\n")


class ChromiumDriver(Driver):
    name = "chromium"
    modes = tuple(m + suffix for m in MUTES for suffix in ("", "-detector"))
    programs = ("chromium",)
    # Renderers and the GPU process are sandboxed from devices (capture happens in the
    # browser's audio service); zygotes only fork. Every other process is traced.
    trace_skip = ("--type=renderer", "--type=gpu-process", "--type=zygote")
    extra_flags: ClassVar[tuple[str, ...]] = ()  # a subclass's additions to FLAGS
    # The meeting page's functions this driver calls (a profile page has its own).
    page_functions: ClassVar[dict[str, str]] = {
        "join": "join",
        "set_muted": "setMuted",
        "leave": "leave",
    }

    @classmethod
    def version(cls, options: Mapping[str, Any]) -> str:
        out = subprocess.run([BINARY, "--version"], capture_output=True, text=True, check=False)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("Chromium")]
        return lines[0].strip() if lines else "unknown"

    @property
    def cdp_port(self) -> int:
        return int(self.ctx.options.get("cdp_port", 9222))

    @property
    def page_port(self) -> int:
        return int(self.ctx.options.get("page_port", 8080))

    @property
    def page_url(self) -> str:
        return f"http://127.0.0.1:{self.page_port}/meeting.html"

    def capture_filter(self) -> str:
        return f"not (tcp port {self.cdp_port})"

    def endpoints(self) -> dict[str, Any]:
        return {
            "meeting_page": self.page_url,
            "media": getattr(self, "media", None),
            "harness": {"cdp": f"127.0.0.1:{self.cdp_port}"},
        }

    def client_traffic(self) -> dict[str, Any]:
        media = getattr(self, "media", None) or {}
        # pc1's side of the media flow; the page itself is fetched from an ephemeral port.
        traffic: dict[str, Any] = {"ports": []}
        if media.get("local"):
            traffic["ports"] = [int(media["local"].rsplit(":", 1)[1])]
        if getattr(self, "level_ext_id", None) is not None:
            traffic["audio_level_ext_id"] = self.level_ext_id
        return traffic

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._serve_page()
        profile = self.ctx.workdir / "chromium-profile"
        argv = [BINARY, *FLAGS, *self.extra_flags, f"--user-data-dir={profile}"]
        # Opening the meeting page at launch lets it load while Playwright connects.
        argv += [f"--remote-debugging-port={self.cdp_port}", self.page_url]
        self.proc = launch_chromium(self, argv)

    def prepare(self) -> None:
        """Attach Playwright over CDP to the meeting page Chromium opened at launch."""
        self.pw, self.browser = connect_over_cdp(self.proc, self.cdp_port)
        context = self.browser.contexts[0]
        pages = [p for p in context.pages if p.url == self.page_url]
        self.page = pages[0] if pages else context.new_page()
        console = self.log_file("page-console").open("a", buffering=1)
        self.console = console
        self.page.on(
            "console", lambda m: console.write(f"{time.monotonic():.6f} {m.type}: {m.text}\n")
        )
        self.page.on(
            "pageerror", lambda e: console.write(f"{time.monotonic():.6f} pageerror: {e}\n")
        )
        if not pages:
            self.page.goto(self.page_url, wait_until="load")
        self.page.wait_for_function("window.prepared !== undefined", timeout=20000)
        # Enumerating devices (started at page load) starts Chromium's audio service, so
        # the tracer is attached to it before the first microphone read.
        self.ctx.event("page_ready", audio_inputs=self.page.evaluate("window.prepared"))

    def _serve_page(self) -> None:
        handler = functools.partial(self._handler(), directory=str(WEB))
        PageHandler.log_path = self.log_file("meeting-server")
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.page_port), handler)
        self.server_thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.server_thread.start()

    def _handler(self) -> type[http.server.SimpleHTTPRequestHandler]:
        """What serves the page's folder (a subclass may serve more)."""
        return PageHandler

    def trace_roots(self) -> list[int]:
        return [self.proc.pid]

    def _call(self, function: str, arg: Any = None) -> dict[str, Any]:
        result = self.page.evaluate(f"a => {function}(a)", arg)
        self.last_poll = 0.0
        self.poll()
        return result if isinstance(result, dict) else {"result": result}

    def join_options(self) -> dict[str, Any]:
        """What the page's join function is given."""
        mute, _, detector = self.ctx.mode.partition("-")
        return {"mode": mute, "detector": bool(detector), "dtx": bool(self.ctx.options.get("dtx"))}

    def join(self) -> dict[str, Any]:
        result = self._call(self.page_functions["join"], self.join_options())
        if not result.get("media"):
            raise DriverError("joined, but no selected ICE candidate pair")
        self.media = result["media"]
        self.level_ext_id = result.get("audio_level_ext_id")
        return result

    def set_muted(self, muted: bool) -> dict[str, Any]:
        result = self._call(self.page_functions["set_muted"], muted)
        if result.get("muted") is not muted:
            raise DriverError(f"page did not confirm muted={muted}: {result}")
        return result

    def leave(self) -> dict[str, Any]:
        return self._call(self.page_functions["leave"])

    def poll(self) -> None:
        """Copy the page's own events (detector verdicts) into events.jsonl.

        At most every 0.25 s: the events carry their own time, only the copy is delayed.
        """
        now = time.monotonic()
        if now - getattr(self, "last_poll", 0.0) < 0.25:
            return
        self.last_poll = now
        for entry in self.page.evaluate("drainLog()"):
            epoch_ms = entry.pop("epoch_ms")
            name = entry.pop("event")
            self.ctx.event(f"page_{name}", t=self.ctx.epoch_to_t(epoch_ms / 1000.0), **entry)

    def stop(self) -> None:
        close_quietly(
            lambda: self.browser.close(),  # disconnects Playwright (Chromium keeps running)
            lambda: self.ctx.procs.stop(self.proc, timeout=5.0),
            lambda: self.pw.stop(),
            lambda: self.server.shutdown(),
            lambda: self.console.close(),
        )
