"""When the person muted and unmuted: the audit's mute timeline, three ways.

* :class:`Interactive` (``--interactive``): the person presses ``m`` when they mute in the app
  and ``u`` when they unmute (``q`` ends the audit); the terminal shows the state, the elapsed
  time and live counters (the app's microphone reads, whether the sound server is feeding its
  stream, bytes and packets sent), redrawn four times a second.
* :class:`HotkeySchedule` (``--hotkey KEY --phase state:seconds ...``): the audit presses the
  app's own mute hotkey at each phase boundary, through the X server (``xdotool``: the app's
  window is given the input focus, then the key is sent with XTEST) or through the kernel's
  input layer (``ydotool``, for Wayland; needs its daemon; not yet run here). The schedule
  starts when the app first opens the microphone.
* :class:`EventsFile` (``--events FILE``): a timeline made elsewhere (a screen recording
  annotated afterwards, another tool), JSON lines ``{"event": "mute"|"unmute"|"join",
  "epoch": seconds}`` (or ``"utc": ISO 8601``), read when the audit ends.

Every mute and unmute says how it was taken (``via``): ``key`` (the person said so),
``hotkey`` (we sent the app's hotkey), ``file`` (the events file said so). Only the first is a
person's account of what they did in the app; a hotkey the app ignored is still recorded as
sent, which is why the verdict shows the reads beside the timeline.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import select
import shutil
import subprocess
import sys
import termios
import time
import tty
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

from reallymuted.testbed import netns
from reallymuted.testbed.user import DesktopUser, as_user


class AuditRecorder(Protocol):
    """What a timeline sees of the running audit (``desktop.AuditRecorder``)."""

    app: str
    user: DesktopUser
    roots: list[int]

    def now(self) -> float: ...
    def event(self, name: str, **fields: Any) -> float: ...
    def check(self) -> None: ...
    def app_gone(self) -> str | None: ...
    def counters(self) -> dict[str, Any]: ...


MUTE_EVENTS = {"mute": "muted", "unmute": "unmuted"}


class Timeline(ABC):
    """Runs while the audit records; returns why the audit ended."""

    how = ""

    def __init__(self, duration_s: float | None = None) -> None:
        self.duration_s = duration_s

    @abstractmethod
    def run(self, audit: AuditRecorder) -> str: ...

    def events_made_elsewhere(self, epoch0: float) -> list[dict[str, Any]]:
        """Events the timeline learnt from outside the audit, on the audit's clock."""
        return []

    def ended(self, audit: AuditRecorder) -> str | None:
        """Why to stop now, if anything says so (the app is gone, the duration is up)."""
        audit.check()
        gone = audit.app_gone()
        if gone:
            return gone
        if self.duration_s is not None and audit.now() >= self.duration_s:
            return f"the duration of {self.duration_s:g} s was reached"
        return None


def recorded_events(rows: Iterable[dict[str, Any]], opened_t: float | None) -> list[dict[str, Any]]:
    """The audit's events in time order, with ``join`` where the app first opened the
    microphone (or at the app's start if it never did; an events file's own ``join`` wins).

    The analysis starts every timeline unmuted at ``join``: a person who muted before the app
    opened the microphone is muted from ``join`` on, so that mute is repeated there.
    """
    events = sorted(rows, key=lambda r: r["t"])
    if not any(e["event"] == "join" for e in events):
        start = next((e["t"] for e in events if e["event"] in ("client_start", "client_attach")), 0)
        join_t = opened_t if opened_t is not None else start
        events.append({"t": join_t, "event": "join", "microphone_opened": opened_t is not None})
        events.sort(key=lambda r: r["t"])
    join_t = next(e["t"] for e in events if e["event"] == "join")
    before = [e for e in events if e["event"] in MUTE_EVENTS and e["t"] <= join_t]
    if before and before[-1]["event"] == "mute":
        events.append({**before[-1], "t": join_t + 1e-6, "repeated_at_join": True})
        events.sort(key=lambda r: r["t"])
    return events


# -- the person at the terminal ---------------------------------------------------------------


class Interactive(Timeline):
    """Keys from the terminal: m (I muted), u (I unmuted), q (end the audit)."""

    how = "key"

    def __init__(
        self, duration_s: float | None = None, keys: TextIO = sys.stdin, screen: TextIO = sys.stdout
    ) -> None:
        super().__init__(duration_s)
        self.keys = keys
        self.screen = screen
        self.muted = False

    def run(self, audit: AuditRecorder) -> str:
        fd = self.keys.fileno()
        saved = termios.tcgetattr(fd) if self.keys.isatty() else None
        try:
            if saved is not None:
                tty.setcbreak(fd)  # keys arrive one by one; Ctrl-C still interrupts
            while True:
                reason = self.ended(audit)
                if reason:
                    return reason
                self.draw(audit)
                ready, _, _ = select.select([fd], [], [], 0.25)
                if not ready:
                    continue
                key = self.keys.read(1)
                if key in ("q", ""):
                    return "the person pressed q" if key else "the terminal closed"
                if key in ("m", "u") and (key == "m") != self.muted:
                    self.muted = key == "m"
                    audit.event("mute" if self.muted else "unmute", via=self.how, key=key)
        finally:
            if saved is not None:
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    def draw(self, audit: AuditRecorder) -> None:
        found = audit.counters()
        elapsed = int(audit.now())
        os_state = {None: "no poll yet", True: "feeding the app", False: "not feeding the app"}
        streams = ", ".join(f"{s.get('id')}:{s.get('state')}" for s in found["os_streams"])
        lines = [
            f"reallymuted audit: {audit.app}",
            "",
            f"  you are      {'MUTED' if self.muted else 'unmuted'}",
            f"  elapsed      {elapsed // 60:02d}:{elapsed % 60:02d}",
            f"  app reads    {found['reads']} microphone reads so far (app-side witness)",
            f"  sound server {os_state[found['os_reading']]}"
            + (f" (streams {streams})" if streams else " (no capture stream)"),
            f"  sent         {found.get('bytes_sent', 0)} bytes, "
            f"{found.get('packets_sent', 0)} packets",
            "",
            "  press m when you mute in the app, u when you unmute, q to end",
        ]
        self.screen.write("\x1b[H\x1b[2J" + "\r\n".join(lines) + "\r\n")
        self.screen.flush()


# -- hotkeys on a schedule --------------------------------------------------------------------


class HotkeySchedule(Timeline):
    """Send the app's mute hotkey at each boundary of ``phases`` (the first: when it starts)."""

    how = "hotkey"

    def __init__(
        self,
        key: str,
        phases: Sequence[dict[str, Any]],
        tool: str = "xdotool",
        start_timeout_s: float = 60.0,
        duration_s: float | None = None,
    ) -> None:
        super().__init__(duration_s)
        if tool not in ("xdotool", "ydotool"):
            raise ValueError(f"unknown key tool {tool!r}: xdotool or ydotool")
        if shutil.which(tool) is None:
            raise ValueError(f"{tool} is not installed")
        self.key, self.phases, self.tool = key, list(phases), tool
        self.start_timeout_s = start_timeout_s

    def run(self, audit: AuditRecorder) -> str:
        deadline = audit.now() + self.start_timeout_s
        while not self.microphone_open(audit):
            reason = self.ended(audit)
            if reason:
                return reason
            if audit.now() > deadline:
                audit.event("schedule_start", waited_for_microphone=False)
                break
            time.sleep(0.1)
        else:
            audit.event("schedule_start", waited_for_microphone=True)
        muted = False
        boundary = audit.now()
        for phase in self.phases:
            if (phase["state"] == "muted") != muted:
                muted = not muted
                t = audit.now()
                sent = self.press(audit)
                audit.event("mute" if muted else "unmute", t=t, via=self.how, **sent)
            boundary += float(phase["seconds"])
            while audit.now() < boundary:
                reason = self.ended(audit)
                if reason:
                    return reason
                time.sleep(0.05)
        return "the schedule ended"

    @staticmethod
    def microphone_open(audit: AuditRecorder) -> bool:
        found = audit.counters()
        return found["reads"] > 0 or bool(found["os_streams"])

    def press(self, audit: AuditRecorder) -> dict[str, Any]:
        """Press the hotkey; returns what was done, for the event."""
        user = audit.user
        if self.tool == "ydotool":
            argv = ["ydotool", "key", self.key]
            done = subprocess.run(argv, capture_output=True, text=True, env=user.env, check=False)
            return {"tool": "ydotool", "key": self.key, "returncode": done.returncode}
        pids = netns.descendants(audit.roots) | set(audit.roots)
        return press_key(self.key, pids, user.env, functools.partial(as_user, user))


def app_window(
    pids: Iterable[int], env: Mapping[str, str], wrap: Callable[[list[str]], list[str]] = list
) -> str | None:
    """A visible X window of one of ``pids`` (by _NET_WM_PID), found as ``wrap`` runs xdotool."""
    for pid in sorted(pids):
        argv = ["xdotool", "search", "--onlyvisible", "--pid", str(pid)]
        found = subprocess.run(wrap(argv), capture_output=True, text=True, env=env, check=False)
        windows = found.stdout.split()
        if windows:
            return windows[-1]
    return None


def press_key(
    key: str,
    pids: Iterable[int],
    env: Mapping[str, str],
    wrap: Callable[[list[str]], list[str]] = list,
) -> dict[str, Any]:
    """Give the app's window (one of ``pids``) the focus and send ``key`` (xdotool syntax)
    through XTEST; returns what was done."""
    window = app_window(pids, env, wrap)
    # --sync: the key only once the window has the focus (else it may go to the old one)
    argv = ["xdotool"] + (["windowfocus", "--sync", window] if window else []) + ["key", key]
    try:
        done = subprocess.run(
            wrap(argv), capture_output=True, text=True, env=env, check=False, timeout=5
        )
    except subprocess.TimeoutExpired:  # the window never took the focus
        return {"tool": "xdotool", "key": key, "window": window, "returncode": None}
    return {"tool": "xdotool", "key": key, "window": window, "returncode": done.returncode}


# -- a timeline made elsewhere ----------------------------------------------------------------


class EventsFile(Timeline):
    """Mute and unmute events from a file, read when the audit ends."""

    how = "file"

    def __init__(self, path: Path, duration_s: float | None = None) -> None:
        super().__init__(duration_s)
        self.path = path

    def run(self, audit: AuditRecorder) -> str:
        while True:
            reason = self.ended(audit)
            if reason:
                return reason
            time.sleep(0.1)

    def events_made_elsewhere(self, epoch0: float) -> list[dict[str, Any]]:
        rows = []
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                event = row["event"]
                epoch = float(row["epoch"]) if "epoch" in row else _epoch(row["utc"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"{self.path}:{number}: not an event line ({exc}): {line}"
                ) from None
            if event not in (*MUTE_EVENTS, "join"):
                raise ValueError(f"{self.path}:{number}: event must be mute, unmute or join")
            rows.append({"t": round(epoch - epoch0, 6), "event": event, "via": self.how})
        return rows


def _epoch(text: str) -> float:
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError("utc needs a time zone (e.g. +00:00 or Z)")
    return when.timestamp()


def parse_phase(text: str) -> dict[str, Any]:
    """``muted:20`` → a schedule phase."""
    state, _, seconds = text.partition(":")
    if state not in ("muted", "unmuted"):
        raise ValueError(f"phase {text!r}: state must be muted or unmuted")
    with contextlib.suppress(ValueError):
        if float(seconds) > 0:
            return {"state": state, "seconds": float(seconds)}
    raise ValueError(f"phase {text!r}: seconds must be a positive number")
