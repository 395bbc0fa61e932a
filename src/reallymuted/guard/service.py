"""The guard's loop: one app, its streams muted at the sound server while the person is muted.

One thread, one ``selectors`` loop over three inputs: the control socket (:mod:`.control`),
``pactl subscribe`` (a source-output was made, changed or removed: reconcile at once) and a
timer (reconcile every ``poll_s`` anyway, in case an event was missed or the subscription
died, which is then restarted). Reconciling lists the server's capture streams, finds the
app's by PID and mutes or unmutes each whose state differs from the person's. So:

* **The app reopens its microphone** (a new stream): muted within one event round-trip while
  the person is muted. How many samples reach it first is measured (tests/test_guard.py).
* **The app, or any client of the server, unmutes a guarded stream**: muted again, logged as
  ``reasserted``.
* **Its child processes**: the app is every process below the roots (the command the guard
  started, or ``--pid``), and a process once seen stays part of it while it lives, so a helper
  that forks away from its parent is still followed.
* **Another app's streams** are left alone, and listed in the status as ``others``.
* **The guard dies**: the streams keep the mute state they had (it is the server's state, not
  the guard's). Muted stays muted: the person believed they were muted, and failing open would
  let the app hear what they meant to keep from it. The status file then still says muted, but
  names the dead guard's PID; a new guard adopts the state it finds (muted if any of the app's
  streams is muted).

The status file (``status.json``) is the indicator the paper asks for: which app has the
microphone open and whether it is let through (``indicator: on`` only then). The same is
printed as one line on the terminal whenever it changes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from reallymuted.guard import control
from reallymuted.guard.streams import (
    Stream,
    capture_streams,
    set_mute,
    split,
    stream_event,
    subscribe,
)
from reallymuted.io import write_json
from reallymuted.testbed.contract import utc
from reallymuted.testbed.netns import alive, children_map, descendants
from reallymuted.testbed.soundserver import SoundServerError, run_client, server_kind
from reallymuted.testbed.timeline import press_key

log = logging.getLogger("reallymuted.guard")

POLL_S = 0.5


@dataclass
class GuardState:
    """What the guard knows: the person's mute, the app's processes and streams."""

    app: str
    muted: bool
    roots: list[int]
    members: set[int] = field(default_factory=set)
    streams: list[Stream] = field(default_factory=list)
    others: list[Stream] = field(default_factory=list)
    refused: int = 0
    reasserted: int = 0

    @property
    def mic_open(self) -> bool:
        return bool(self.streams)

    @property
    def indicator(self) -> str:
        """On only while the app has the microphone and the person lets it through."""
        return "on" if self.mic_open and not self.muted else "off"

    def line(self) -> str:
        if not self.mic_open:
            return f"guard: {self.app}: microphone closed ({'muted' if self.muted else 'live'})"
        what = "MUTED at the OS (the app reads silence)" if self.muted else "live"
        return f"guard: {self.app}: microphone open, {what}; {len(self.streams)} stream(s)"


class Guard:
    """Guards one app; :meth:`run` until the app is gone or the guard is stopped."""

    def __init__(
        self,
        app: str,
        roots: Sequence[int],
        env: Mapping[str, str],
        *,
        address: str,
        status_path: Path,
        events_path: Path | None = None,
        owner_uid: int | None = None,
        muted: bool | None = None,
        app_hotkey: str | None = None,
        terminal: TextIO | None = None,
        poll_s: float = POLL_S,
    ) -> None:
        self.env = dict(env)
        self.kind = server_kind(self.env)
        self.address, self.status_path, self.events_path = address, status_path, events_path
        self.owner_uid = os.getuid() if owner_uid is None else owner_uid
        self.terminal, self.poll_s = terminal, poll_s
        self.app_hotkey = app_hotkey
        self.state = GuardState(app, bool(muted), list(roots))
        self.adopt = muted is None  # take the state the app's streams are in
        self.stopping = False
        self.shown = ""

    # --- the app's processes and streams -----------------------------------------------

    def _members(self) -> set[int]:
        tree = children_map()
        known = {pid for pid in self.state.members if alive(pid)}
        self.state.members = descendants([*self.state.roots, *known], tree)
        return self.state.members

    def reconcile(self, why: str) -> None:
        """Bring every stream of the app to the person's state."""
        mine, others = split(capture_streams(self.env), self._members())
        if self.adopt:
            self.adopt = False
            self.state.muted = any(s.muted for s in mine)
            self.event("adopted", muted=self.state.muted, streams=[s.id for s in mine])
        known = {s.id for s in self.state.streams}
        for stream in mine:
            if stream.muted == self.state.muted:
                continue
            if set_mute(self.env, stream.id, self.state.muted):
                kind = "reasserted" if stream.id in known and why != "command" else "applied"
                self.state.reasserted += kind == "reasserted"
                self.event(kind, stream=stream.id, pid=stream.pid, muted=self.state.muted, why=why)
        new = sorted({s.id for s in mine} - known)
        for stream_id in new:
            self.event("stream", stream=stream_id, why=why)
        self.state.streams = [Stream(s.id, s.pid, s.app, self.state.muted, s.corked) for s in mine]
        self.state.others = others
        self.publish()

    def set_muted(self, muted: bool) -> None:
        """The person's command: the app's known streams first (the fast path), then all;
        in hotkey mode, then the app's own hotkey, if the state changed (it is a toggle)."""
        changed = muted != self.state.muted
        self.state.muted = muted
        self.adopt = False
        for stream in self.state.streams:
            set_mute(self.env, stream.id, muted)
        self.event("muted" if muted else "unmuted", streams=[s.id for s in self.state.streams])
        if self.app_hotkey and changed:
            sent = press_key(self.app_hotkey, self._members(), self.env)
            self.event("app-hotkey", **sent)
        self.reconcile("command")

    # --- what it shows --------------------------------------------------------------------

    def event(self, name: str, **fields: Any) -> None:
        row = {"t": time.time(), "event": name, **fields}
        log.info("%s %s", name, fields)
        if self.events_path is not None:
            with self.events_path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")

    def status(self) -> dict[str, Any]:
        s = self.state
        return {
            "app": s.app,
            "guard_pid": os.getpid(),
            "server": self.kind,
            "muted": s.muted,
            "mic_open": s.mic_open,
            "indicator": s.indicator,
            "streams": [x.row() for x in s.streams],
            "others": [x.row() for x in s.others],
            "pids": sorted(s.members),
            "refused": s.refused,
            "reasserted": s.reasserted,
            "running": not self.stopping,
            "updated": utc(time.time()),
        }

    def publish(self) -> None:
        write_json(self.status_path, self.status())
        line = self.state.line()
        if self.terminal is not None and line != self.shown:
            print(line, file=self.terminal, flush=True)
        self.shown = line

    # --- requests ------------------------------------------------------------------------

    def serve(self, conn: socket.socket) -> None:
        conn.settimeout(1.0)
        with conn:
            pid, uid, _ = control.peer(conn)
            if uid not in (self.owner_uid, 0):
                # read what it asked (for the log; and a socket closed with unread data may
                # reset the connection before the peer reads the refusal)
                try:
                    asked = control.read_request(conn)["command"]
                except (control.ControlError, OSError) as exc:
                    asked = f"({exc})"
                self.state.refused += 1
                self.event("refused", peer_pid=pid, peer_uid=uid, command=asked)
                log.warning("refused a request from uid %d (pid %d): %s", uid, pid, asked)
                with contextlib.suppress(OSError):
                    control.reply(conn, {"ok": False, "error": f"uid {uid} may not use this guard"})
                self.publish()
                return
            try:
                request = control.read_request(conn)
            except (control.ControlError, OSError) as exc:
                with contextlib.suppress(OSError):
                    control.reply(conn, {"ok": False, "error": str(exc)})
                return
            command = request["command"]
            if command != "status":
                target = not self.state.muted if command == "toggle" else command == "mute"
                self.set_muted(target)
                self.event("request", command=command, peer_pid=pid, peer_uid=uid)
            with contextlib.suppress(OSError):
                control.reply(conn, {"ok": True, **self.status()})

    # --- the loop ---------------------------------------------------------------------------

    def stop(self, *_: object) -> None:
        self.stopping = True

    def app_gone(self) -> bool:
        return not any(alive(pid) for pid in [*self.state.roots, *self.state.members])

    def _subscribe(self) -> subprocess.Popen[str]:
        """``pactl subscribe``, once the server lists it as a client (so no event is missed
        from here on: the app is started, or its streams listed, only after this)."""
        events = subscribe(self.env)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and events.poll() is None:
            clients = run_client(["pactl", "-f", "json", "list", "clients"], self.env)
            pids = {(c.get("properties") or {}).get("application.process.id") for c in clients}
            if str(events.pid) in pids:
                break
            time.sleep(0.01)
        os.set_blocking(events.stdout.fileno(), False)  # type: ignore[union-attr]
        return events

    def run(self, start_app: Callable[[], subprocess.Popen[bytes]] | None = None) -> int:
        """Guard until the app is gone or :meth:`stop`; ``start_app`` starts it (once the
        guard listens to the server), else the roots are an app already running."""
        server = control.listen(self.address)
        selector = selectors.DefaultSelector()
        selector.register(server, selectors.EVENT_READ, "control")
        events: subprocess.Popen[str] | None = None
        child: subprocess.Popen[bytes] | None = None
        buffered = b""
        self.event("started", address=control.shown(self.address), server=self.kind)
        try:
            events = self._subscribe()
            selector.register(events.stdout, selectors.EVENT_READ, "events")  # type: ignore[arg-type]
            if start_app is not None:
                child = start_app()
                self.state.roots = [child.pid]
            self.reconcile("start")
            next_poll = time.monotonic() + self.poll_s
            while not self.stopping:
                if events.poll() is not None:  # the subscription died: a new one
                    selector.unregister(events.stdout)  # type: ignore[arg-type]
                    self.event("resubscribed", status=events.returncode)
                    events = self._subscribe()
                    selector.register(events.stdout, selectors.EVENT_READ, "events")  # type: ignore[arg-type]
                    self.reconcile("resubscribed")
                changed = ""
                for key, _ in selector.select(max(0.0, next_poll - time.monotonic())):
                    if key.data == "control":
                        with contextlib.suppress(BlockingIOError):
                            conn, _ = server.accept()
                            conn.setblocking(True)
                            self.serve(conn)
                    else:
                        chunk = os.read(key.fd, 65536)
                        buffered += chunk
                        *lines, buffered = buffered.split(b"\n")
                        for line in lines:
                            what = stream_event(line.decode(errors="replace"))
                            if what is not None and what[0] in ("new", "change"):
                                changed = what[0]
                if changed or time.monotonic() >= next_poll:
                    self.reconcile(changed or "poll")
                    next_poll = time.monotonic() + self.poll_s
                if child is not None and child.poll() is not None and self.app_gone():
                    self.event("app-exited", status=child.returncode)
                    break
                if child is None and self.app_gone():
                    self.event("app-exited")
                    break
        except SoundServerError as exc:
            self.event("server-lost", error=str(exc))
            log.error("the sound server stopped answering: %s", exc)
            return 1
        finally:
            self.stopping = True
            with contextlib.suppress(Exception):
                write_json(self.status_path, self.status())
            if events is not None and events.poll() is None:
                events.terminate()
                events.wait(2)
            selector.close()
            server.close()
            if not self.address.startswith("\0"):
                with contextlib.suppress(OSError):
                    Path(self.address).unlink()
            self.event("stopped", muted=self.state.muted)
        return 0


def run_guard(
    app: str,
    command: Sequence[str],
    pids: Sequence[int],
    *,
    address: str,
    status_path: Path,
    events_path: Path | None,
    muted: bool | None,
    app_hotkey: str | None,
    terminal: TextIO | None,
) -> int:
    """Start ``command`` (or take the running ``pids``) and guard it until it is gone."""
    env = dict(os.environ)
    guard = Guard(
        app,
        [],
        env,
        address=address,
        status_path=status_path,
        events_path=events_path,
        muted=muted,
        app_hotkey=app_hotkey,
        terminal=terminal,
    )
    child: list[subprocess.Popen[bytes]] = []

    def start_app() -> subprocess.Popen[bytes]:
        child.append(subprocess.Popen(list(command), stdin=subprocess.DEVNULL))
        return child[0]

    if not command:
        guard.state.roots = list(pids)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, guard.stop)
    try:
        return guard.run(start_app if command else None)
    finally:  # an app the guard started goes with it (a SIGKILL leaves it running, muted)
        for app_process in child:
            if app_process.poll() is None:
                app_process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    app_process.wait(5)
