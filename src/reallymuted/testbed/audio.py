"""The session's microphone: a private PulseAudio daemon and a paced pipe writer.

The daemon's default source is a ``module-pipe-source`` whose FIFO is fed in real time by
:func:`feed`, 20 ms at a time, with non-blocking writes. PulseAudio drains the FIFO only while
some client's record stream on that source is running: measured on this testbed, the reads
stop within 0.1 s of the last stream closing (``module-suspend-on-idle`` then suspends the
idle source after its timeout). So each tick tells, independently of any client, whether the
microphone was being read: bytes accepted = read, bytes refused with EAGAIN = nobody reading.
That is the OS-level witness; every tick is one line of ``mic_trace.jsonl`` with
``"api": "os:pipe-source"``. (A client that keeps its stream running but never reads it still
counts as reading here: the server keeps capturing for it. The app-level witness tells apart.)

Run as a program (``python -m reallymuted.testbed.audio feed ...``) the writer is its own
process, so it keeps time however busy the session runner is.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, missing from Python 3.11's fcntl on some builds
OS_API = "os:pipe-source"


@dataclass(frozen=True)
class PulsePaths:
    """Where one private PulseAudio daemon keeps its socket, FIFO, config and log."""

    root: Path

    @property
    def runtime(self) -> Path:
        return self.root / "run"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def socket(self) -> Path:
        return self.runtime / "native"

    @property
    def fifo(self) -> Path:
        return self.runtime / "mic.fifo"

    @property
    def config(self) -> Path:
        return self.root / "default.pa"

    @property
    def server(self) -> str:
        """The PULSE_SERVER value that every client of the session gets."""
        return f"unix:{self.socket}"


def pulse_config(paths: PulsePaths, rate: int, channels: int, suspend_timeout_s: int) -> str:
    """A minimal daemon: a null sink for playback, the pipe source as the default mic.

    The FIFO is created by module-pipe-source itself (it refuses an existing one).
    """
    return "\n".join(
        [
            ".fail",
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={paths.socket}",
            f"load-module module-null-sink sink_name=speaker rate={rate} channels={channels}",
            f"load-module module-pipe-source source_name=mic file={paths.fifo} format=s16le "
            f"rate={rate} channels={channels} source_properties=device.description=TestbedMic",
            "set-default-source mic",
            "set-default-sink speaker",
            f"load-module module-suspend-on-idle timeout={suspend_timeout_s}",
            "",
        ]
    )


def prepare_pulse(root: Path, rate: int, channels: int, suspend_timeout_s: int) -> PulsePaths:
    """Create the private HOME and runtime directory and write the daemon's config."""
    paths = PulsePaths(root)
    for d in (paths.runtime, paths.home):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)
    paths.config.write_text(pulse_config(paths, rate, channels, suspend_timeout_s))
    return paths


def pulse_env(paths: PulsePaths) -> dict[str, str]:
    """Environment of the daemon: private HOME/XDG_RUNTIME_DIR, so no user config leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(HOME=str(paths.home), XDG_RUNTIME_DIR=str(paths.runtime))
    return env


def pulse_command(paths: PulsePaths, log_path: Path) -> list[str]:
    return [
        "pulseaudio",
        "-n",
        "--daemonize=no",
        "--use-pid-file=no",
        "--system=false",
        "--disallow-exit",
        "--exit-idle-time=-1",
        f"--file={paths.config}",
        f"--log-target=file:{log_path}",
    ]


def wait_pulse_ready(paths: PulsePaths, alive: object, timeout: float = 10.0) -> None:
    """Wait until the daemon answers on its socket and the FIFO exists.

    ``alive`` is a callable returning False once the daemon has died (then fail at once).
    """
    deadline = time.monotonic() + timeout
    env = {**pulse_env(paths), "PULSE_SERVER": paths.server}  # private HOME: no cookie files
    while time.monotonic() < deadline:
        if not alive():  # type: ignore[operator]
            raise RuntimeError("pulseaudio exited during start-up")
        if paths.socket.exists() and paths.fifo.exists():
            probe = subprocess.run(
                ["pactl", "info"], env=env, capture_output=True, text=True, check=False
            )
            if probe.returncode == 0:
                return
        time.sleep(0.03)
    raise TimeoutError(f"pulseaudio not ready after {timeout:.0f} s")


def make_realtime(tid: int, priority: int) -> str:
    """Put thread (or process) ``tid`` under SCHED_FIFO at ``priority``; what it runs under
    after the attempt, e.g. ``"SCHED_FIFO:5"``, or ``"SCHED_OTHER (EPERM)"`` when refused
    (a container without CAP_SYS_NICE, an RT group with no runtime): recorded, not fatal."""
    refused = ""
    try:
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as exc:
        refused = f" ({errno.errorcode.get(exc.errno or 0, exc.errno)})"
    return describe_scheduling(tid) + refused


def describe_scheduling(tid: int) -> str:
    """``"SCHED_FIFO:5"``, ``"SCHED_OTHER"``...: the policy thread ``tid`` runs under."""
    policy = os.sched_getscheduler(tid) & ~getattr(os, "SCHED_RESET_ON_FORK", 0)
    names = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR"}
    name = names.get(policy, str(policy))
    if policy in (os.SCHED_FIFO, os.SCHED_RR):
        name += f":{os.sched_getparam(tid).sched_priority}"
    return name


def pipe_source_thread(pulse_pid: int) -> int | None:
    """The daemon's thread that drains the microphone's FIFO (module-pipe-source's I/O
    thread, named "pipe-source"), if it has one."""
    for task in Path(f"/proc/{pulse_pid}/task").iterdir():
        with contextlib.suppress(OSError):
            if (task / "comm").read_text().strip() == "pipe-source":
                return int(task.name)
    return None


# --- the paced writer ------------------------------------------------------------------


def load_stimulus(path: Path, rate: int, channels: int) -> np.ndarray:
    """The stimulus as int16 frames; it must already have the pipe source's rate and channels.

    (A rate mismatch would silently play it at the wrong speed: the pipe has no header.)
    """
    info = sf.info(str(path))
    if info.samplerate != rate or info.channels != channels:
        raise ValueError(
            f"{path}: {info.samplerate} Hz x {info.channels} ch, but the microphone is "
            f"{rate} Hz x {channels} ch"
        )
    data = sf.read(str(path), dtype="int16", always_2d=True)[0]
    if len(data) == 0:
        raise ValueError(f"{path}: no samples")
    return data


def chunk_levels(chunk: np.ndarray) -> tuple[float, float]:
    """Peak and RMS of int16 samples as fractions of full scale."""
    x = chunk.astype(np.float64) / 32768.0
    return float(np.max(np.abs(x))), float(np.sqrt(np.mean(x * x)))


def _open_fifo(fifo: Path, pipe_bytes: int) -> int | None:
    import fcntl  # POSIX only: imported here so Windows hosts can import this module

    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no reader (cannot happen with Pulse, which opens O_RDWR)
            return None
        raise
    # A small pipe buffer makes "accepted" follow what the source actually read.
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, pipe_bytes)
    return fd


def feed(
    fifo: Path,
    stimulus: Path,
    out: Path,
    t0: float,
    *,
    rate: int = 48000,
    channels: int = 1,
    tick_ms: int = 20,
    pipe_bytes: int = 4096,
    reader_pid: int | None = None,
    stop_after_s: float | None = None,
    realtime_priority: int = 0,
) -> None:
    """Write the stimulus into ``fifo`` in real time, looping, and log every tick to ``out``.

    The stimulus advances with wall time whether or not anyone reads it, like sound in a room.
    If the writer falls behind (a busy machine) it writes the missed ticks at once, so the
    microphone never runs slow; ``late_ms`` says by how much a tick was late.
    ``realtime_priority`` > 0: the writer runs under SCHED_FIFO at that priority, so a busy
    machine does not make it late; the first tick's line says what it got (``sched``).
    Stops cleanly on SIGTERM/SIGINT.
    """
    sched = make_realtime(0, realtime_priority) if realtime_priority > 0 else None
    frames = load_stimulus(stimulus, rate, channels)
    per_tick = rate * tick_ms // 1000
    n_chunks = len(frames) // per_tick
    if n_chunks == 0:
        raise ValueError(f"{stimulus}: shorter than one {tick_ms} ms tick")
    frames = frames[: n_chunks * per_tick]
    chunks = [frames[i * per_tick : (i + 1) * per_tick] for i in range(n_chunks)]
    payload = [c.tobytes() for c in chunks]
    stats = [chunk_levels(c) for c in chunks]

    stopping = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    while not fifo.exists():  # created by module-pipe-source
        if stopping:
            return
        time.sleep(0.01)
    fd = _open_fifo(fifo, pipe_bytes)
    tick_s = tick_ms / 1000.0
    pid = reader_pid if reader_pid is not None else 0
    index = 0
    next_tick = time.monotonic()
    with out.open("w", buffering=1 << 16) as log:
        first = True
        while not stopping:
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now = time.monotonic()
            if stop_after_s is not None and now - t0 > stop_after_s:
                break
            late_ms = max(0.0, (now - next_tick) * 1000.0)
            chunk = payload[index % n_chunks]
            accepted = 0
            if fd is None:
                fd = _open_fifo(fifo, pipe_bytes)
            if fd is not None:
                try:
                    accepted = os.write(fd, chunk)
                except BlockingIOError:
                    accepted = 0  # the source is not reading
                except BrokenPipeError:
                    os.close(fd)
                    fd = None
            row = {
                "t": round(now - t0, 6),
                "api": OS_API,
                "pid": pid,
                "tid": None,
                "frames": accepted // (2 * channels),
                "bytes": accepted,
                "dropped": len(chunk) - accepted,
                "tick": index,
                "late_ms": round(late_ms, 2),
                "peak": round(stats[index % n_chunks][0], 6) if accepted else None,
                "rms": round(stats[index % n_chunks][1], 6) if accepted else None,
            }
            if first:
                row["stimulus_start"] = True
                if sched is not None:
                    row["sched"] = sched
                first = False
            log.write(json.dumps(row) + "\n")
            if index % 10 == 0:
                log.flush()
            index += 1
            next_tick += tick_s
    if fd is not None:
        os.close(fd)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reallymuted.testbed.audio")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("feed", help="feed a WAV into a PulseAudio pipe source in real time")
    p.add_argument("--fifo", type=Path, required=True)
    p.add_argument("--stimulus", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="tick log (JSON lines)")
    p.add_argument("--t0", type=float, required=True, help="session start, CLOCK_MONOTONIC s")
    p.add_argument("--rate", type=int, default=48000)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--tick-ms", type=int, default=20)
    p.add_argument("--pipe-bytes", type=int, default=4096)
    p.add_argument("--reader-pid", type=int, default=None)
    p.add_argument("--stop-after", type=float, default=None, help="seconds after t0")
    p.add_argument(
        "--realtime-priority", type=int, default=0, help="SCHED_FIFO priority (0: not real-time)"
    )
    args = parser.parse_args(argv)
    feed(
        args.fifo,
        args.stimulus,
        args.out,
        args.t0,
        rate=args.rate,
        channels=args.channels,
        tick_ms=args.tick_ms,
        pipe_bytes=args.pipe_bytes,
        reader_pid=args.reader_pid,
        stop_after_s=args.stop_after,
        realtime_priority=args.realtime_priority,
    )
    return 0


if __name__ == "__main__":
    sys.exit(_main())
