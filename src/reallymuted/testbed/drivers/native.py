"""Native drivers: the real desktop apps on a Windows or macOS host (``source`` = ``native``).

What the paper traced: the vendor's own client, joined to a real meeting, muted with the app's
own shortcut, its capture API hooked (WASAPI on Windows, CoreAudio on macOS). These drivers do
that from the registry entry of the app (``workflow/apps.yaml``: process names, mute hotkey,
audio API):

* **join**: open the meeting URL with the platform's URL handler, so the installed app takes
  it — the app's own protocol (``zoommtg://``, ``msteams://``) where one is documented, the
  vendor's meeting page otherwise (which hands over to the installed app), or the URL given
  in the config (``join_url``);
* **mute**: the app's hotkey from the registry, sent as real key events to the app's window
  (Windows ``SendInput`` after bringing the window forward; macOS System Events
  ``keystroke`` after activating the app). A hotkey *toggles*: the app must join unmuted (an
  app setting), and nothing outside the app can read back its state, so each mute/unmute event
  says ``confirmed: false``; the capture API trace is what shows what the app did;
* **trace**: every process of the app by name (registry ``processes``), with the platform
  agent (``agents/wasapi.js`` or ``agents/coreaudio.js``);
* **leave**: the app's leave hotkey when configured, otherwise the app is quit.

They run under :mod:`reallymuted.testbed.host` (no network namespace or PulseAudio on these
hosts), which refuses at once, with a failure manifest, on any other platform. None of this has
been run against the real apps yet (docs/apps.md): every manifest and row they
produce says ``source: native`` so nothing else can be mistaken for it.
"""

from __future__ import annotations

import contextlib
import functools
import platform as platform_module
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any, ClassVar

from reallymuted import config
from reallymuted.paths import APPS_REGISTRY
from reallymuted.testbed.drivers import Driver, DriverError
from reallymuted.testbed.drivers.hotkeys import (
    Hotkey,
    applescript_string,
    focus_windows,
    osascript_hotkey,
    parse_hotkey,
    send_input_windows,
    windows_key_events,
)

# the platform agents and the registry (hotkeys, process names, selectors): its code too
RESOURCES = ("../agents/wasapi.js", "../agents/coreaudio.js", "/workflow/apps.yaml")

# The host platform as the registry names it.
PLATFORMS = {"win32": "windows", "darwin": "macos", "linux": "linux"}
PLATFORM_NAMES = {"windows": "Windows", "macos": "macOS"}

# Options a native driver takes (everything else in a config entry is a typo).
OPTIONS = {
    "registry_app",  # the app's id in workflow/apps.yaml (e.g. zoom)
    "meeting",  # meeting id / path filled into the join URL's {meeting}
    "site",  # {site} of the URL (Webex)
    "password",  # meeting password (Zoom pwd); never written to the evidence
    "join_url",  # the URL to open instead of the built-in one ({meeting}/{site}/{password})
    "interface",  # host network interface dumpcap captures (dumpcap -D lists them)
    "capture_filter",  # BPF filter; default: everything on the interface
    "executable",  # Windows: the app's executable, started before join (optional)
    "app_name",  # macOS: the application to activate (default: first registry process)
    "leave_hotkey",  # the app's leave-meeting shortcut; default: quit the app
    "join_timeout_s",  # how long the app may take to open the microphone after join
    "probe",  # Windows: let the agent walk the WASAPI chain once (late attach), default true
}

# Apps whose desktop client documents a URL protocol for joining (the others get the vendor's
# meeting page from the registry, which hands over to the installed app).
PROTOCOL_URLS = {
    # Zoom "Client URL schemes" (Windows/macOS client).
    "zoom": "zoommtg://zoom.us/join?action=join&confno={meeting}",
    # Teams deep link with the msteams scheme instead of https.
    "teams": "msteams://teams.microsoft.com/l/meetup-join/{meeting}",
}


# --- the registry --------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def load_registry(path: str = str(APPS_REGISTRY)) -> dict[str, Any]:
    """``{app id: entry}`` of workflow/apps.yaml, validated (cached: checks run per job)."""
    return config.load_registry(path)


def registry_entry(options: Mapping[str, Any], platform: str) -> dict[str, Any]:
    """The registry entry of the configured app on ``platform``, or a ValueError saying why not."""
    app = options.get("registry_app")
    registry = load_registry()
    if not app:
        raise ValueError("option registry_app is required (the app's id in workflow/apps.yaml)")
    if app not in registry:
        raise ValueError(f"registry_app {app!r} is not in workflow/apps.yaml")
    spec = registry[app]["platforms"][platform]
    expected = "web" if platform == "web" else "native"
    if spec["offer"] != expected:
        raise ValueError(
            f"{app} is not offered as a {expected} app on {platform} (registry offer: "
            f"{spec['offer']})"
        )
    return {"id": app, "name": registry[app]["name"], **spec}


# --- opening URLs --------------------------------------------------------------------------


def open_url_command(url: str, platform: str) -> list[str]:
    """The command that hands ``url`` to the platform's URL handler (the installed app).

    Windows: ``rundll32 url.dll,FileProtocolHandler`` (ShellExecute without cmd.exe, whose
    parsing would split a URL at ``&``). macOS: ``open``.
    """
    if platform == "windows":
        return ["rundll32.exe", "url.dll,FileProtocolHandler", url]
    if platform == "macos":
        return ["open", url]
    raise ValueError(f"no URL handler command for platform {platform!r}")


def join_url(entry: Mapping[str, Any], options: Mapping[str, Any]) -> tuple[str, str]:
    """(URL to open, where its template came from: config / protocol / vendor page)."""
    fields = {
        "meeting": str(options.get("meeting") or ""),
        "site": str(options.get("site") or ""),
        "password": str(options.get("password") or ""),
    }
    if options.get("join_url"):
        template, via = str(options["join_url"]), "config"
    elif entry["id"] in PROTOCOL_URLS:
        template, via = PROTOCOL_URLS[entry["id"]], "protocol"
        if entry["id"] == "zoom" and fields["password"]:
            template += "&pwd={password}"
    else:
        registry = load_registry()
        template, via = registry[entry["id"]]["platforms"]["web"]["join_url"], "vendor page"
    quoted = {k: urllib.parse.quote(v, safe="/:@") for k, v in fields.items()}
    return template.format(**quoted), via


def redact(url: str, options: Mapping[str, Any]) -> str:
    """The URL as it may appear in the evidence: without the meeting password."""
    secret = str(options.get("password") or "")
    if secret:
        url = url.replace(urllib.parse.quote(secret, safe="/:@"), "<password>")
    return url


# --- processes -----------------------------------------------------------------------------


def find_processes(names: list[str]) -> list[tuple[int, str]]:
    """(pid, name) of the running processes called exactly one of ``names`` (via Frida)."""
    import frida

    wanted = set(names)
    return sorted(
        (p.pid, p.name) for p in frida.get_local_device().enumerate_processes() if p.name in wanted
    )


# --- the drivers -------------------------------------------------------------------------


class NativeDriver(Driver):
    """A vendor's desktop app on this host; subclasses say which platform and how to act."""

    source: ClassVar[str] = "native"
    runner: ClassVar[str] = "host"  # run by reallymuted.testbed.host, not the Linux testbed
    platform: ClassVar[str]  # registry platform: windows | macos
    audio_api: ClassVar[str]  # registry audio_api the agent hooks
    agent: ClassVar[str]  # agent file under agents/ (after native_core.js)
    modes = ("hotkey",)
    options: ClassVar[frozenset[str] | None] = frozenset(OPTIONS)

    @classmethod
    def check(cls, mode: str, options: Mapping[str, Any]) -> None:
        super().check(mode, options)
        entry = registry_entry(options, cls.platform)
        if entry["audio_api"] != cls.audio_api:
            raise ValueError(
                f"driver {cls.name}: {entry['id']} uses {entry['audio_api']} on {cls.platform}, "
                f"the agent hooks {cls.audio_api}"
            )
        parse_hotkey(entry["mute_hotkey"], cls.platform)
        if options.get("leave_hotkey"):
            parse_hotkey(str(options["leave_hotkey"]), cls.platform)

    @classmethod
    def host_problem(cls, options: Mapping[str, Any]) -> str | None:
        """Why this host cannot run the driver's sessions (None: it can). No side effects."""
        here = PLATFORMS.get(sys.platform, sys.platform)
        name = registry_entry(options, cls.platform)["name"]
        if here != cls.platform:
            return (
                f"driver {cls.name} runs on {PLATFORM_NAMES[cls.platform]} hosts with {name} "
                f"installed; this host is {platform_module.system() or here}"
            )
        missing = [p for p in cls.host_programs() if shutil.which(p) is None]
        if missing:
            return f"driver {cls.name}: missing program(s) {', '.join(missing)} on this host"
        if not options.get("interface"):
            return (
                f"driver {cls.name}: set the option `interface` (the host interface dumpcap "
                "captures; `dumpcap -D` lists them)"
            )
        if not (options.get("meeting") or options.get("join_url")):
            return f"driver {cls.name}: set the option `meeting` (or `join_url`) for {name}"
        return None

    @classmethod
    def host_programs(cls) -> tuple[str, ...]:
        return ("dumpcap",)

    @classmethod
    def version(cls, options: Mapping[str, Any]) -> str:
        return "unknown (read from the app's About box and record it in the config)"

    @property
    def entry(self) -> dict[str, Any]:
        return registry_entry(self.ctx.options, self.platform)

    @property
    def hotkey(self) -> Hotkey:
        return parse_hotkey(self.entry["mute_hotkey"], self.platform)

    def capture_filter(self) -> str | None:
        value = self.ctx.options.get("capture_filter")
        return str(value) if value else None

    def process_names(self) -> list[str]:
        return list(self.entry["processes"])

    def app_pids(self) -> list[int]:
        return [pid for pid, _name in find_processes(self.process_names())]

    def endpoints(self) -> dict[str, Any]:
        return {"join": getattr(self, "joined_via", None), "host": platform_module.node()}

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Make sure the app runs (so the tracer attaches before join); launch it if not."""
        self.muted = False
        if not self.app_pids():
            self.launch()
            deadline = time.monotonic() + 60
            while not self.app_pids():
                if time.monotonic() > deadline:
                    raise DriverError(
                        f"{self.entry['name']} did not start (no process named "
                        f"{', '.join(self.process_names())} within 60 s)"
                    )
                time.sleep(0.5)
        self.ctx.event("app_running", pids=self.app_pids())

    def launch(self) -> None:
        """Start the app without joining anything (platform-specific)."""
        raise DriverError(f"{self.entry['name']} is not running and cannot be launched")

    def trace_roots(self) -> list[int]:
        return self.app_pids()

    def run(self, argv: list[str], what: str) -> subprocess.CompletedProcess[str]:
        """Run a short helper command, its output into client.log, failing with its stderr."""
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        with self.log_file("commands").open("a") as fh:
            fh.write(f"{time.monotonic():.6f} {what}: rc={result.returncode} {result.stderr}\n")
        if result.returncode != 0:
            raise DriverError(f"{what} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def join(self) -> dict[str, Any]:
        url, via = join_url(self.entry, self.ctx.options)
        self.joined_via = via
        self.run(open_url_command(url, self.platform), "open join URL")
        return {"url": redact(url, self.ctx.options), "via": via, "confirmed": False}

    def press(self, hotkey: Hotkey) -> dict[str, Any]:
        raise NotImplementedError

    def set_muted(self, muted: bool) -> dict[str, Any]:
        if muted == self.muted:
            return {"method": "hotkey", "sent": False, "note": "already in that state"}
        extra = self.press(self.hotkey)
        self.muted = muted
        # A hotkey toggles and the app's state cannot be read from outside: the capture trace
        # says what the app did.
        return {"method": "hotkey", "keys": self.hotkey.text, "confirmed": False, **extra}

    def leave(self) -> dict[str, Any]:
        leave_keys = self.ctx.options.get("leave_hotkey")
        if leave_keys:
            return {"method": "hotkey", **self.press(parse_hotkey(str(leave_keys), self.platform))}
        self.quit_app()
        return {"method": "quit app"}

    def quit_app(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Nothing of ours runs: the app is the vendor's and was quit or left at leave."""


class WindowsDriver(NativeDriver):
    name = "native-windows"
    platform = "windows"
    audio_api = "WASAPI"
    agent = "wasapi.js"

    def launch(self) -> None:
        exe = self.ctx.options.get("executable")
        if not exe:
            raise DriverError(
                f"{self.entry['name']} is not running; start it (signed in) or set the option "
                "`executable`"
            )
        subprocess.Popen([str(exe)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def press(self, hotkey: Hotkey) -> dict[str, Any]:
        focused = focus_windows(self.app_pids())
        send_input_windows(windows_key_events(hotkey))
        return {"focused": focused}

    def quit_app(self) -> None:
        for pid in self.app_pids():
            with contextlib.suppress(DriverError):  # a child may be gone with its parent
                self.run(["taskkill", "/PID", str(pid), "/T"], f"taskkill {pid}")


class MacDriver(NativeDriver):
    name = "native-macos"
    platform = "macos"
    audio_api = "CoreAudio"
    agent = "coreaudio.js"

    @classmethod
    def host_programs(cls) -> tuple[str, ...]:
        return ("dumpcap", "osascript", "open")

    @property
    def app_name(self) -> str:
        return str(self.ctx.options.get("app_name") or self.entry["processes"][0])

    def launch(self) -> None:
        self.run(["open", "-a", self.app_name], f"open -a {self.app_name}")

    def press(self, hotkey: Hotkey) -> dict[str, Any]:
        try:
            self.run(osascript_hotkey(hotkey, self.app_name), f"keystroke {hotkey.text}")
        except DriverError as exc:
            raise DriverError(
                f"{exc}; the runner needs Accessibility permission (System Settings > Privacy "
                "& Security > Accessibility) to send keystrokes"
            ) from exc
        return {}

    def quit_app(self) -> None:
        self.run(
            ["osascript", "-e", f"tell application {applescript_string(self.app_name)} to quit"],
            f"quit {self.app_name}",
        )
