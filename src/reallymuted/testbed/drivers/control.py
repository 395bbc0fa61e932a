"""The control client: the project's own microphone reader, with a mute policy chosen by us.

It records from the default PulseAudio source through ``libpulse-simple`` (``pa_simple_read``
of 20 ms), so both witnesses see it like any client. Its behaviour while muted is known in
advance, which is what lets the instrument be checked against truth:

* ``continuous``: keeps reading (and discarding) while muted;
* ``stops``: closes the stream on mute and reopens it on unmute;
* ``periodic``: closes the stream on mute, then every ``every_s`` seconds (counted from the
  mute) reads for ``read_s`` seconds.

Before ``join`` and after ``leave`` it reads nothing. It takes one command per line on stdin
(``join``, ``mute``, ``unmute``, ``leave``, ``quit``) and answers ``ok <command>`` on stdout once
the command has taken effect. Run as ``python -m reallymuted.testbed.drivers.control``; only the
standard library is imported so it starts fast.
"""

from __future__ import annotations

import argparse
import ctypes
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

from reallymuted.testbed.drivers import Driver, DriverError

POLICIES = ("continuous", "stops", "periodic")

PA_STREAM_RECORD = 2
PA_SAMPLE_S16LE = 3
NO_VALUE = 0xFFFFFFFF  # (uint32_t) -1: let the server choose


class _SampleSpec(ctypes.Structure):
    _fields_ = [("format", ctypes.c_int), ("rate", ctypes.c_uint32), ("channels", ctypes.c_uint8)]


class _BufferAttr(ctypes.Structure):
    _fields_ = [
        ("maxlength", ctypes.c_uint32),
        ("tlength", ctypes.c_uint32),
        ("prebuf", ctypes.c_uint32),
        ("minreq", ctypes.c_uint32),
        ("fragsize", ctypes.c_uint32),
    ]


class PulseRecorder:
    """A blocking PulseAudio record stream (libpulse-simple through ctypes)."""

    def __init__(self, rate: int, channels: int, fragment_bytes: int) -> None:
        lib = ctypes.CDLL("libpulse-simple.so.0")
        lib.pa_simple_new.restype = ctypes.c_void_p
        lib.pa_simple_new.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.POINTER(_SampleSpec),
            ctypes.c_void_p,
            ctypes.POINTER(_BufferAttr),
            ctypes.POINTER(ctypes.c_int),
        ]
        lib.pa_simple_read.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_int),
        ]
        lib.pa_simple_free.argtypes = [ctypes.c_void_p]
        self.lib = lib
        self.spec = _SampleSpec(PA_SAMPLE_S16LE, rate, channels)
        # fragsize = one read: the server delivers in 20 ms steps, as a call client would.
        self.attr = _BufferAttr(NO_VALUE, NO_VALUE, NO_VALUE, NO_VALUE, fragment_bytes)
        self.handle: int | None = None

    def open(self) -> None:
        error = ctypes.c_int(0)
        handle = self.lib.pa_simple_new(
            None,
            b"reallymuted-control",
            PA_STREAM_RECORD,
            None,
            b"microphone",
            ctypes.byref(self.spec),
            None,
            ctypes.byref(self.attr),
            ctypes.byref(error),
        )
        if not handle:
            raise OSError(f"pa_simple_new failed (pulse error {error.value})")
        self.handle = handle

    def read(self, buffer: ctypes.Array[ctypes.c_char]) -> None:
        error = ctypes.c_int(0)
        if self.lib.pa_simple_read(self.handle, buffer, len(buffer), ctypes.byref(error)) < 0:
            raise OSError(f"pa_simple_read failed (pulse error {error.value})")

    def close(self) -> None:
        if self.handle is not None:
            self.lib.pa_simple_free(self.handle)
            self.handle = None


class Policy:
    """Whether the client wants the microphone at a given moment."""

    def __init__(self, name: str, read_s: float, every_s: float) -> None:
        if name not in POLICIES:
            raise ValueError(f"policy {name!r}: expected one of {', '.join(POLICIES)}")
        if name == "periodic" and not 0 < read_s < every_s:
            raise ValueError(f"periodic policy needs 0 < read_s < every_s, got {read_s}/{every_s}")
        self.name, self.read_s, self.every_s = name, read_s, every_s
        self.joined = False
        self.muted_at: float | None = None

    def wants_mic(self, now: float) -> bool:
        if not self.joined:
            return False
        if self.muted_at is None or self.name == "continuous":
            return True
        if self.name == "stops":
            return False
        since = now - self.muted_at
        return since >= self.every_s and since % self.every_s < self.read_s


def _client_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reallymuted.testbed.drivers.control")
    parser.add_argument("--policy", choices=POLICIES, required=True)
    parser.add_argument("--read-s", type=float, default=1.0)
    parser.add_argument("--every-s", type=float, default=3.0)
    parser.add_argument("--rate", type=int, default=48000)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--read-ms", type=int, default=20)
    args = parser.parse_args(argv)

    policy = Policy(args.policy, args.read_s, args.every_s)
    nbytes = args.rate * args.channels * 2 * args.read_ms // 1000
    recorder = PulseRecorder(args.rate, args.channels, nbytes)
    buffer = ctypes.create_string_buffer(nbytes)
    commands: queue.Queue[str] = queue.Queue()

    def say(text: str) -> None:
        print(f"{time.monotonic():.6f} {text}", flush=True)

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip():
                commands.put(line.strip())
        commands.put("quit")  # stdin closed: the driver is gone

    threading.Thread(target=read_stdin, daemon=True).start()
    say(f"ready policy={policy.name} read_s={policy.read_s} every_s={policy.every_s}")
    reads = 0
    while True:
        try:
            command = commands.get_nowait() if recorder.handle else commands.get(timeout=0.01)
        except queue.Empty:
            command = None
        now = time.monotonic()
        if command == "join":
            policy.joined = True
        elif command == "mute":
            policy.muted_at = now
        elif command == "unmute":
            policy.muted_at = None
        elif command in ("leave", "quit"):
            policy.joined = False
        elif command is not None:
            say(f"error unknown command {command!r}")
            command = None
        want = policy.wants_mic(now)
        if want and recorder.handle is None:
            recorder.open()
            say("stream open")
        elif not want and recorder.handle is not None:
            recorder.close()
            say(f"stream closed after {reads} reads")
            reads = 0
        if command is not None:
            say(f"ok {command}")
            if command == "quit":
                return 0
        if recorder.handle is not None:
            recorder.read(buffer)
            reads += 1


class ControlDriver(Driver):
    """Runs the control client and sends it the schedule's commands."""

    name = "control"
    modes = ("ctrl",)

    @classmethod
    def check(cls, mode: str, options: Mapping[str, Any]) -> None:
        super().check(mode, options)
        Policy(
            options.get("policy", "continuous"),
            float(options.get("read_s", 1.0)),
            float(options.get("every_s", 3.0)),
        )

    @classmethod
    def version(cls, options: Mapping[str, Any]) -> str:
        from importlib.metadata import version

        return f"reallymuted-control {version('reallymuted')} (libpulse-simple)"

    def start(self) -> None:
        opts = self.ctx.options
        argv = [sys.executable, "-m", "reallymuted.testbed.drivers.control"]
        argv += ["--policy", str(opts.get("policy", "continuous"))]
        argv += [
            "--read-s",
            str(opts.get("read_s", 1.0)),
            "--every-s",
            str(opts.get("every_s", 3.0)),
        ]
        log_path = self.log_file("control")
        self.log_fh = log_path.open("w", buffering=1)
        self.acks: queue.Queue[str] = queue.Queue()
        self.proc = self.ctx.procs.start(
            "client",
            argv,
            env=self.ctx.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log_fh,
            text=True,
        )
        self.reader = threading.Thread(target=self._pump, args=(self.proc.popen.stdout,))
        self.reader.daemon = True
        self.reader.start()

    def prepare(self) -> None:
        self._wait_for("ready", timeout=10.0)

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.log_fh.write(line)
            parts = line.split(maxsplit=1)
            if len(parts) == 2:
                self.acks.put(parts[1].strip())

    def _wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.acks.get(timeout=0.05)
            except queue.Empty:
                if self.proc.returncode() is not None:
                    raise DriverError(f"control client exited ({self.proc.returncode()})") from None
                continue
            if line.startswith(prefix):
                return line
        raise DriverError(f"control client: no {prefix!r} within {timeout:.0f} s")

    def command(self, command: str) -> dict[str, Any]:
        assert self.proc.popen.stdin is not None
        try:
            self.proc.popen.stdin.write(command + "\n")
            self.proc.popen.stdin.flush()
        except BrokenPipeError:
            raise DriverError("control client is not running") from None
        self._wait_for(f"ok {command}", timeout=5.0)
        return {}

    def trace_roots(self) -> list[int]:
        return [self.proc.pid]

    def join(self) -> dict[str, Any]:
        return self.command("join")

    def set_muted(self, muted: bool) -> dict[str, Any]:
        return self.command("mute" if muted else "unmute")

    def leave(self) -> dict[str, Any]:
        return self.command("leave")

    def stop(self) -> None:
        if self.proc.returncode() is None:
            try:
                self.command("quit")
                self.proc.popen.wait(3.0)
            except (DriverError, subprocess.TimeoutExpired, OSError):
                pass
        self.ctx.procs.stop(self.proc)
        self.reader.join(1.0)
        self.log_fh.close()


if __name__ == "__main__":
    sys.exit(_client_main())
