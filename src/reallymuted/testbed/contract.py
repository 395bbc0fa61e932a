"""The evidence contract of a session, as both runners write it (docs/evidence.md).

A session publishes, in its folder (:func:`reallymuted.paths.session_dir`), the evidence files
of :data:`reallymuted.paths.EVIDENCE` plus those its driver declares, and ``manifest.json``
last; a failed one leaves only ``manifest.failed.json``. This module is what the namespace
runner (:mod:`reallymuted.testbed.namespace`, the Linux testbed) and the host runner
(:mod:`reallymuted.testbed.host`, Windows and macOS) share: the failure record, the events
log, the manifest's common keys and the clock's formats.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reallymuted.io import atomic_path, sha256_file
from reallymuted.paths import EVIDENCE
from reallymuted.testbed.drivers import get_driver

SCHEMA = "reallymuted.session/1"  # manifest schema (data: unchanged by the package's layout)


class SessionFailure(RuntimeError):
    """A step of the session failed; ``component`` names what failed."""

    def __init__(self, step: str, component: str, error: str) -> None:
        super().__init__(f"{step}: {component}: {error}")
        self.step, self.component, self.error = step, component, error

    def record(self) -> dict[str, str]:
        return {"step": self.step, "component": self.component, "error": self.error}


class EventLog:
    """events.jsonl being written: one line per event, ``t`` on the session clock."""

    def __init__(self, path: Path, t0: float) -> None:
        self.t0 = t0
        self.fh = path.open("w", buffering=1)
        self.lock = threading.Lock()

    def __call__(self, event: str, t: float | None = None, **fields: Any) -> float:
        t = time.monotonic() - self.t0 if t is None else t
        row = {"t": round(t, 6), "event": event, **fields}
        with self.lock:
            self.fh.write(json.dumps(row, default=str) + "\n")
        return t

    def close(self) -> None:
        self.fh.close()


def describe_exit(rc: int | None) -> str:
    if rc is None:
        return "is still running"
    if rc < 0:
        return f"was killed by {signal.Signals(-rc).name}"
    return f"exited with status {rc}"


def utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="microseconds")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_lines(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """A JSON-lines evidence file, written atomically."""
    with atomic_path(path) as tmp, tmp.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row, default=str) + "\n")


def evidence_files(driver: str) -> tuple[str, ...]:
    """Every evidence file a session of this driver publishes besides the manifest."""
    return (*EVIDENCE, *get_driver(driver).extra_evidence)


def apps_with_evidence(sessions: Mapping[str, Any], name: str) -> list[str]:
    """The configured apps whose sessions publish the extra evidence file ``name``."""
    return [
        app
        for app, entry in sessions["apps"].items()
        if name in get_driver(entry["driver"]).extra_evidence
    ]


def manifest_core(
    spec: Any,
    result: Mapping[str, Any],
    failure: Mapping[str, Any] | None,
    source: str,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """The keys every session manifest has, on the testbed and on a host: status, what was
    run (app, mode, schedule, stimulus with its digest) and when, on the session's clock
    (``result``'s ``t0_epoch``, ``t0_monotonic`` and ``end_t``)."""
    t0_epoch = result.get("t0_epoch")
    start = end = None
    if t0_epoch is not None:
        start = {"utc": utc(t0_epoch), "epoch": t0_epoch, "monotonic": result["t0_monotonic"]}
        if "end_t" in result:
            end = {
                "utc": utc(t0_epoch + result["end_t"]),
                "epoch": t0_epoch + result["end_t"],
                "monotonic": result["t0_monotonic"] + result["end_t"],
                "t": result["end_t"],
            }
    stimulus = {"name": spec.stimulus, "path": spec.stimulus_path, "sha256": None}
    with contextlib.suppress(OSError):
        stimulus["sha256"] = sha256_file(spec.stimulus_path)
    return {
        "schema": SCHEMA,
        "status": "failed" if failure else "ok",
        "exit_status": 1 if failure else 0,
        "failure": dict(failure) if failure else None,
        "source": source,
        "app": spec.app,
        "driver": spec.driver,
        "mode": spec.mode,
        "condition": spec.condition,
        "rep": spec.rep,
        "options": dict(options),
        "guard": spec.guard,  # the OS-level mute on (docs/guard.md)
        "schedule": {"phases": spec.schedule, "lead_s": spec.lead_s, "tail_s": spec.tail_s},
        "stimulus": stimulus,
        "start": start,
        "end": end,
        "start_epoch": start["epoch"] if start else None,  # = start.epoch, for pcap times
    }
