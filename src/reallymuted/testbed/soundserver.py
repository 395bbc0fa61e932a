"""The OS-side witness on a desktop: the app's capture streams on the user's sound server.

On a person's own desktop (``reallymuted audit``) the microphone is whatever their sound server
offers, not our pipe source. We ask the server, PulseAudio or PipeWire, which recording
streams the app's processes have open and whether it is delivering samples to them (``pactl
-f json``: source-outputs and their sources' state; ``pw-dump``: ``Stream/Input/Audio`` nodes,
and ``pw-profiler`` for the cycles each finished), one row per poll in the shape of the
testbed's OS witness, so :func:`reallymuted.analysis.micpolicy.read_share` applies as is. Run
it as the desktop's user, or as root with ``--user``: it drops to the user once started (an
interpreter under /root cannot be executed by the user).

What this witness can and cannot see. It sees stream state, not reads: a stream the server
fills (PulseAudio: source-output not corked and its source RUNNING; PipeWire: node ``running``
and finishing cycles) counts as read for the whole interval even if the app never takes the
samples out of its buffer; a corked stream, a suspended source (``pactl suspend-source``; on
PipeWire it is ignored while a stream runs) or an idle or suspended node is open but not read;
a closed stream is no stream. PipeWire's profiler data come in batches (every 0.2-1 s: a 16 KiB
buffer or a 1 s timer) and ``pw-profiler`` 0.3.65 follows one driver only (restarted when the
app's node is in another driver's graph), so a node that stays ``running`` but stops finishing
cycles (its process stopped or hung) is called not reading 1.5-2.5 s late; where no cycles
are seen the state alone decides. PIDs are those the clients report (``application.process.id``):
a client in another PID namespace is not matched. A poll (``pw-dump``, or two ``pactl``) took
about 15 ms (25 at most; 11-13 % of a core at 0.1 s) and misses a stream opened and closed
between polls, the samples and what the app does with them (the Frida tracer sees those).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from subprocess import DEVNULL
from typing import Any, TextIO

from reallymuted.testbed.netns import descendants

KINDS = ("pipewire", "pulseaudio")
API = {"pulseaudio": "os:pulse-stream", "pipewire": "os:pipewire-node"}
DEFAULT = (48000, 1, 2)  # rate, channels, bytes per sample when there is no stream
FINISHED = "3"  # pw_node_activation status of a follower that completed its cycle
WINDOW_S = 1.5  # the profiler flushes about once a second: a reading node finishes cycles in it
RESTART_S = 3.0


class SoundServerError(RuntimeError):
    """The server answered a poll with an error or with output we cannot read."""


class NoSoundServer(SoundServerError):
    """No PulseAudio or PipeWire server answers with the given environment."""


@dataclass(frozen=True)
class CaptureStream:
    """One recording stream of the sound server, as one poll saw it."""

    server: str  # "pipewire" or "pulseaudio"
    id: int  # source-output index (PulseAudio) or node id (PipeWire)
    pid: int | None  # the owner's process id, as its client reports it
    app: str
    state: str  # PulseAudio: running/corked; PipeWire: running/idle/suspended/error/...
    source_state: str | None  # PulseAudio: RUNNING/IDLE/SUSPENDED of the stream's source
    quanta: int | None  # PipeWire: cycles the node finished (profiler), None if not seen
    rate: int
    channels: int
    sample_bytes: int
    reading: bool  # the server is delivering samples to the stream now

    @property
    def byte_rate(self) -> int:
        return self.rate * self.channels * self.sample_bytes

    def compact(self) -> dict[str, Any]:
        extra = "source_state" if self.server == "pulseaudio" else "quanta"
        row = {"id": self.id, "pid": self.pid, "state": self.state, extra: getattr(self, extra)}
        return {**row, "reading": self.reading}


def run_client(argv: list[str], env: Mapping[str, str], parse: bool = True) -> Any:
    """A client's output (C locale: pactl translates its labels), or the objects of the JSON
    it prints: pactl -f json prints one array; pw-dump may print several (an object removed
    while it dumped: ``{"id": N, "info": null}``), each replacing objects by id."""
    try:
        done = subprocess.run(argv, env={**env, "LC_ALL": "C"}, capture_output=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SoundServerError(f"{argv[0]}: {exc}") from exc
    text = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip() or done.returncode
        raise SoundServerError(f"{' '.join(argv)}: {err}")
    if not parse:
        return text
    decoder, objects, pos = json.JSONDecoder(), {}, 0
    try:
        while (pos := re.compile(r"\s*").match(text, pos).end()) < len(text):
            value, pos = decoder.raw_decode(text, pos)
            for o in value if isinstance(value, list) else []:
                if isinstance(o, dict) and "type" not in o and o.get("info", 0) is None:
                    objects.pop(o.get("id"), None)
                elif isinstance(o, dict):
                    objects[o.get("id", len(objects))] = o
    except ValueError as exc:
        raise SoundServerError(f"{argv[0]}: not JSON ({exc}): {text[:200]!r}") from exc
    return list(objects.values())


def _int(value: Any) -> int | None:
    with contextlib.suppress(TypeError, ValueError):
        return int(value)
    return None


def sample_bytes(fmt: str) -> int:
    """Bytes per sample of a PulseAudio (s16le, float32le, s24-32le) or SPA (S16LE, F32P,
    S24_32LE) sample format name; 2 if unknown."""
    f = fmt.lower().replace("-", "_")
    size = re.match(r"(?:[suf]|float)(8|16|18|20|24|32|64)|[au]law", f)
    sizes = {None: 1, "8": 1, "16": 2, "32": 4, "64": 8}  # None: a-law, u-law
    return 4 if "24_32" in f else sizes.get(size[1], 3) if size else DEFAULT[2]


def server_kind(env: Mapping[str, str]) -> str:
    """The kind of server ("pipewire" or "pulseaudio") that clients started with ``env`` reach.

    ``pactl info`` first, since a PipeWire socket next to a real PulseAudio (PipeWire for
    video only) does not make the audio PipeWire's; but only if PULSE_SERVER is set or a
    PulseAudio socket is there, since libpulse would otherwise autospawn a daemon.
    """
    runtime = env.get("XDG_RUNTIME_DIR", "")
    pulse = Path(env.get("PULSE_RUNTIME_PATH") or f"{runtime}/pulse") / "native"
    tried = [f"no PulseAudio socket at {pulse}"]
    if env.get("PULSE_SERVER") or pulse.is_socket():
        try:
            info = run_client(["pactl", "info"], env, parse=False)
        except SoundServerError as exc:
            tried = [str(exc)]
        else:
            name = re.search(r"^Server Name:\s*(.*)$", info, re.M)
            return "pipewire" if name and "PipeWire" in name.group(1) else "pulseaudio"
    remote = env.get("PIPEWIRE_REMOTE", "pipewire-0")
    socket = Path(env.get("PIPEWIRE_RUNTIME_DIR") or runtime or "/nonexistent") / remote
    if socket.is_socket():
        return "pipewire"
    raise NoSoundServer(
        "no sound server reachable (check XDG_RUNTIME_DIR / PULSE_SERVER / PIPEWIRE_REMOTE "
        f"and that this runs as the desktop's user): {tried[0]}; no PipeWire socket at {socket}"
    )


def _pulse_streams(env: Mapping[str, str], pids: set[int] | None) -> list[CaptureStream]:
    outputs = run_client(["pactl", "-f", "json", "list", "source-outputs"], env)
    sources = run_client(["pactl", "-f", "json", "list", "sources", "short"], env)
    source_state = {_int(s.get("index")): str(s.get("state", "?")) for s in sources}
    found = []
    for out in outputs:
        props = out.get("properties") or {}
        pid = _int(props.get("application.process.id"))
        if pids is not None and pid not in pids:
            continue
        spec = re.match(r"(\S+) (\d+)ch (\d+)Hz", str(out.get("sample_specification", "")))
        fmt = (int(spec[3]), int(spec[2]), sample_bytes(spec[1])) if spec else DEFAULT
        corked, state = bool(out.get("corked")), source_state.get(_int(out.get("source")))
        ids = (_int(out.get("index")) or 0, pid, str(props.get("application.name", "")))
        status = ("corked" if corked else "running", state, None)
        found.append(
            CaptureStream("pulseaudio", *ids, *status, *fmt, not corked and state == "RUNNING")
        )
    return found


def _node_format(info: Mapping[str, Any], props: Mapping[str, Any]) -> tuple[int, int, int]:
    """Rate, channels, bytes/sample: the negotiated Format, else what the node announces."""
    for key in ("Format", "EnumFormat"):
        for param in (info.get("params") or {}).get(key) or []:
            rate, channels, fmt = param.get("rate"), param.get("channels"), param.get("format")
            if isinstance(rate, int) and isinstance(channels, int) and isinstance(fmt, str):
                return rate, channels, sample_bytes(fmt)
    rate, channels = _int(props.get("audio.rate")), _int(props.get("audio.channels"))
    return rate or DEFAULT[0], channels or DEFAULT[1], sample_bytes(props.get("audio.format", ""))


def _pipewire_streams(env: Mapping[str, str], pids: set[int] | None) -> list[CaptureStream]:
    objects = run_client(["pw-dump", "-N"], env)
    props_of = {o.get("id"): (o.get("info") or {}).get("props") or {} for o in objects}
    found = []
    for o in objects:
        info = o.get("info") or {}
        props = info.get("props") or {}
        capture = str(props.get("media.class", "")).startswith("Stream/Input/Audio")
        if not capture or not str(o.get("type", "")).endswith(":Node"):
            continue
        client = props_of.get(_int(props.get("client.id")), {})
        pid = _int(props.get("application.process.id"))
        if pid is None:  # the client's own word, else its socket's peer
            pid = _int(client.get("application.process.id") or client.get("pipewire.sec.pid"))
        if pids is not None and pid not in pids:
            continue
        app = str(props.get("application.name") or client.get("application.name") or "")
        state, fmt = str(info.get("state", "?")), _node_format(info, props)
        ids = (_int(o.get("id")) or 0, pid, app)
        found.append(CaptureStream("pipewire", *ids, state, None, None, *fmt, state == "running"))
    return found


def capture_streams(
    kind: str, env: Mapping[str, str], pids: set[int] | None
) -> list[CaptureStream]:
    """One poll of the recording streams owned by ``pids`` (all if None); stateless, so on
    PipeWire ``reading`` is the node state alone (:class:`Witness` adds the cycles)."""
    if kind not in KINDS:
        raise ValueError(f"unknown sound server kind {kind!r} (not one of {KINDS})")
    return (_pulse_streams if kind == "pulseaudio" else _pipewire_streams)(env, pids)


class Witness:
    """Polls one server, keeping what PipeWire's ``reading`` needs: the cycles each node
    finished, from ``pw-profiler`` (0.3.65: a tab-separated row per cycle of one driver, 4
    driver columns then 8 per follower: id, 5 timings, status, 0), which writes with stdio,
    line-buffered only to a terminal: so a pty, read by a thread. (pw-top has no batch mode
    before 0.3.79; pw-dump has no counters.)"""

    def __init__(self, kind: str, env: Mapping[str, str], *, cycles: bool = True) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown sound server kind {kind!r} (not one of {KINDS})")
        self.kind, self.env, self.lock = kind, dict(env), threading.Lock()
        self.counts: dict[int, int] = {}  # node -> cycles it finished
        self.finished_at: dict[int, float] = {}  # node -> when a row saying so arrived
        self.seen_at: dict[int, float] = {}  # node -> when a row with it arrived
        self.unseen_since: float | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: str | None = None  # pw-profiler writes plot files in its cwd
        if kind == "pipewire" and cycles:
            self.workdir = tempfile.mkdtemp(prefix="reallymuted-pw-profiler-")
            self._start()

    def _start(self) -> None:
        self.started_at, self.followers = time.monotonic(), set[int]()
        master, self.slave = os.openpty()
        tty.setraw(self.slave)
        argv = ["pw-profiler", "-o", os.ttyname(self.slave)]  # its errors go to our stderr
        env = {**self.env, "LC_ALL": "C"}
        try:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=self.workdir, stdout=DEVNULL, start_new_session=True
            )
        except OSError:  # no pw-profiler: cycles stay unknown, the node state decides
            os.close(self.slave)
        threading.Thread(target=self._read, args=(master,), daemon=True).start()

    def _read(self, master: int) -> None:
        pending = b""
        with contextlib.suppress(OSError):  # EIO once the profiler and our slave are closed
            while chunk := os.read(master, 1 << 16):
                *lines, pending = (pending + chunk).split(b"\n")
                now = time.monotonic()
                with self.lock:
                    for fields in (line.decode(errors="replace").split("\t") for line in lines):
                        for i in range(4, len(fields) - 7, 8):
                            if (node := _int(fields[i].strip())) is not None:
                                self.followers.add(node)
                                self.seen_at[node] = now
                                if fields[i + 6].strip() == FINISHED:
                                    self.counts[node] = self.counts.get(node, 0) + 1
                                    self.finished_at[node] = now
        os.close(master)

    def _cycles(self, node: int) -> tuple[int | None, bool]:
        """(cycles finished so far, finished one lately), (None, True) if not in view."""
        since = time.monotonic() - WINDOW_S
        with self.lock:
            if self.seen_at.get(node, -1.0) < since:
                return None, True
            return self.counts.get(node, 0), self.finished_at.get(node, -1.0) >= since

    def poll(self, pids: set[int] | None) -> list[CaptureStream]:
        """The app's streams now; on PipeWire, reading only while finishing cycles."""
        streams = capture_streams(self.kind, self.env, pids)
        if self.workdir is None:
            return streams
        out = []
        for s in streams:
            quanta, finishing = self._cycles(s.id)
            out.append(dataclasses.replace(s, quanta=quanta, reading=s.reading and finishing))
        # restart a profiler that died, that watched another driver's graph than the app's
        # running nodes for RESTART_S, or that nears pw-profiler's 64 followers
        now, running = time.monotonic(), [s.quanta for s in out if s.state == "running"]
        blind = bool(running) and all(q is None for q in running)
        self.unseen_since = (self.unseen_since or now) if blind else None
        dead = self.proc is None or self.proc.poll() is not None
        unseen = self.unseen_since is not None and now - self.unseen_since >= RESTART_S
        if now - self.started_at >= RESTART_S and (dead or unseen or len(self.followers) > 60):
            self._stop()
            self.unseen_since = None
            self._start()
        return out

    def _stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            os.close(self.slave)  # the reader then sees EIO and ends
            self.proc = None

    def close(self) -> None:
        self._stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def witness_row(
    kind: str, t: float, interval_s: float, streams: list[CaptureStream], **extra: Any
) -> dict[str, Any]:
    """The OS-witness row for one poll: the interval's bytes offered by the server, counted
    as read if any of the app's streams is reading, else as dropped."""
    reading = [s for s in streams if s.reading]
    ref = max(reading or streams, key=lambda s: s.byte_rate, default=None)
    offered = round(interval_s * (ref.byte_rate if ref else DEFAULT[0] * DEFAULT[1] * DEFAULT[2]))
    row = {"t": round(t, 6), "api": API[kind], "bytes": offered if reading else 0}
    row.update(dropped=0 if reading else offered, streams=[s.compact() for s in streams])
    return {**row, **extra}


def watch(
    out: TextIO, t0: float, roots: list[int], interval_s: float = 0.1, kind: str | None = None
) -> None:
    """Poll the app's capture streams every ``interval_s`` and write one row per poll to
    ``out`` (an open file: it may have been opened before dropping privileges) until
    SIGTERM/SIGINT. The app is the ``roots`` and their descendants, recomputed
    at each poll (it may start its audio process late). The environment names the server."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    kind = kind or server_kind(os.environ)
    witness = Witness(kind, os.environ)
    try:
        with out as log:
            previous, next_poll = None, time.monotonic()
            while not stopping.is_set():
                start, extra = time.monotonic(), {}
                try:
                    streams = witness.poll(descendants(roots))
                except SoundServerError as exc:
                    streams, extra["error"] = [], str(exc)
                extra["poll_ms"] = round((time.monotonic() - start) * 1000, 1)
                interval = interval_s if previous is None else start - previous
                log.write(json.dumps(witness_row(kind, start - t0, interval, streams, **extra)))
                log.write("\n")
                previous, next_poll = start, max(next_poll + interval_s, time.monotonic())
                stopping.wait(next_poll - time.monotonic())
    finally:
        witness.close()


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reallymuted.testbed.soundserver")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("watch", help="write the app's capture-stream state as OS-witness rows")
    p.add_argument("--out", type=Path, required=True, help="rows (JSON lines, appended)")
    p.add_argument("--t0", type=float, required=True, help="session start, CLOCK_MONOTONIC s")
    p.add_argument("--root", type=int, action="append", required=True, help="the app's PIDs")
    p.add_argument("--interval", type=float, default=0.1, help="poll interval, s")
    p.add_argument("--server", choices=KINDS, help="default: the one the environment reaches")
    p.add_argument("--user", type=int, help="drop to this uid once started (when run as root)")
    args = parser.parse_args(argv)
    # opened while still root: the audit's folder is root's, and the user need not reach it
    out = args.out.open("a", buffering=1)
    if args.user is not None and os.geteuid() != args.user:
        entry = pwd.getpwuid(args.user)
        os.initgroups(entry.pw_name, entry.pw_gid)
        os.setgid(entry.pw_gid)
        os.setuid(args.user)
    try:
        watch(out, args.t0, args.root, args.interval, args.server)
    except NoSoundServer as exc:
        print(f"soundserver: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main())
