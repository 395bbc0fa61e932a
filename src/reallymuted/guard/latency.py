"""What a guarded app receives, timestamped: the guard's own measuring app (tests, bench).

The app is ``parecord`` (a real libpulse client; under PipeWire it talks to pipewire-pulse)
writing what it receives, raw, to a FIFO that :class:`Received` reads in a thread: each chunk
gets its arrival time, so what the app got while muted, and when sound came back after an
unmute, is read off the app's own output. :func:`unmute_latency` is the measurement of
``make bench`` (the issue's target: under 50 ms from the unmute request to the first
non-silent sample at the app).
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reallymuted.guard import control
from reallymuted.testbed.headless import RATE, Desktop


@dataclass
class Received:
    """What a recorder wrote to its FIFO: (arrival time, samples) per chunk."""

    fifo: Path
    chunks: list[tuple[float, np.ndarray]] = field(default_factory=list)
    thread: threading.Thread | None = None

    def start(self) -> None:
        def read() -> None:
            rest = b""
            with self.fifo.open("rb", buffering=0) as fh:
                while chunk := fh.read(65536):
                    now, data = time.monotonic(), rest + chunk
                    cut = len(data) // 2 * 2
                    self.chunks.append((now, np.frombuffer(data[:cut], "<i2")))
                    rest = data[cut:]

        self.thread = threading.Thread(target=read, daemon=True)
        self.thread.start()

    def between(self, start: float, end: float) -> np.ndarray:
        parts = [x for t, x in self.chunks if start <= t < end]
        return np.concatenate(parts) if parts else np.zeros(0, "<i2")

    def first_sound_after(self, start: float) -> float | None:
        return next((t for t, x in self.chunks if t >= start and np.any(x)), None)

    def first_samples(self, count: int) -> np.ndarray:
        every = np.concatenate([x for _, x in self.chunks]) if self.chunks else np.zeros(0)
        return every[:count]


def recorder(desktop: Desktop, name: str, app: str = "") -> tuple[list[str], Received]:
    """A parecord command (client name ``app``, default ``name``) writing to a new FIFO, and
    the reader of that FIFO (started)."""
    fifo = desktop.base / f"{name}.fifo"
    os.mkfifo(fifo)
    os.chown(fifo, desktop.uid, desktop.gid)
    received = Received(fifo)
    received.start()
    argv = ["parecord", "--raw", "--format=s16le", f"--rate={RATE}", "--channels=1"]
    return [*argv, "--latency-msec=10", f"--client-name={app or name}", str(fifo)], received


def unmute_latency(desktop: Desktop, repeats: int = 20, muted_s: float = 0.4) -> dict[str, Any]:
    """Guard a recorder and mute and unmute it ``repeats`` times: per cycle, the time from
    the unmute request to the first non-silent sample the app receives, and from the mute
    request to the last one; and whether every sample between was zero."""
    argv, received = recorder(desktop, "latency")
    status = desktop.base / "latency.status.json"
    guard = [sys.executable, "-m", "reallymuted.cli", "guard", "run", "--live", "--app", "rec"]
    desktop.start("latency-guard", [*guard, "--status", str(status), "--", *argv])
    address = control.default_address(desktop.uid)
    try:
        deadline = time.monotonic() + 15
        while not received.chunks:
            if time.monotonic() > deadline:
                raise RuntimeError(desktop.log_tail("latency-guard"))
            time.sleep(0.05)
        time.sleep(0.5)
        cycles = []
        for _ in range(repeats):
            sent_mute = time.monotonic()
            control.request("mute", address)
            muted = time.monotonic()
            time.sleep(muted_s)
            sent_unmute = time.monotonic()
            control.request("unmute", address)
            time.sleep(0.3)
            back = received.first_sound_after(sent_unmute)
            last = [t for t, x in received.chunks if sent_mute <= t < sent_unmute and np.any(x)]
            cycles.append(
                {
                    "unmute_to_sound_ms": None if back is None else 1000 * (back - sent_unmute),
                    "mute_to_silence_ms": 1000 * (max(last, default=sent_mute) - sent_mute),
                    "nonzero_while_muted": int(
                        np.count_nonzero(received.between(muted + 0.05, sent_unmute))
                    ),
                }
            )
    finally:
        desktop.stop("latency-guard")
    delays = sorted(c["unmute_to_sound_ms"] for c in cycles if c["unmute_to_sound_ms"] is not None)
    return {
        "server": desktop.kind,
        "repeats": repeats,
        "unmute_to_sound_ms": {
            "median": round(statistics.median(delays), 1) if delays else None,
            "p95": round(delays[int(0.95 * (len(delays) - 1))], 1) if delays else None,
            "max": round(delays[-1], 1) if delays else None,
        },
        "sound_never_came_back": sum(c["unmute_to_sound_ms"] is None for c in cycles),
        "mute_to_silence_ms_max": round(max(c["mute_to_silence_ms"] for c in cycles), 1),
        "nonzero_samples_while_muted": sum(c["nonzero_while_muted"] for c in cycles),
        "cycles": cycles,
    }
