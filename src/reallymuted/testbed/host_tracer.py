"""The app-level witness on a Windows or macOS host: Frida attached to every process named like
the app, as they appear, with ``agents/native_core.js`` plus the platform agent; each read on
the session clock through a calibrated offset between the agent's clock and the runner's
(:mod:`reallymuted.testbed.host` runs it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

AGENTS = Path(__file__).resolve().parent / "agents"
CORE_AGENT = AGENTS / "native_core.js"
RESOURCES = ("agents/native_core.js",)


def agent_source(agent: str) -> str:
    """The script loaded into each process: the shared core, then the platform binding."""
    return CORE_AGENT.read_text() + "\n" + (AGENTS / agent).read_text()


class HostTracer:
    """Attach the native agent to every process named like the app, as they appear.

    Rows go to ``rows`` with ``t`` on the session clock (seconds since ``t0`` on
    ``time.monotonic``); coverage goes to ``event``.
    """

    def __init__(
        self,
        names: list[str],
        source: str,
        t0: float,
        event: Callable[..., float],
        probe: bool = True,
        poll_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import frida

        self.frida = frida
        self.errors = tuple(
            getattr(frida, n) for n in dir(frida) if n.endswith("Error") and n[0].isupper()
        )
        self.names = set(names)
        self.source = source
        self.t0 = t0
        self.event = event
        self.probe = probe
        self.poll_s = poll_s
        self.clock = clock
        self.device = frida.get_local_device()
        self.sessions: dict[int, tuple[Any, Any, float]] = {}  # pid -> (session, script, offset)
        self.seen: dict[int, int] = {}  # pid -> polls seen (attach once seen twice: settled)
        self.given_up: set[int] = set()
        self.rows: list[dict[str, Any]] = []
        self.pending: dict[int, list[dict[str, Any]]] = {}  # rows before calibration
        self.platform_ok: dict[int, bool] = {}
        self.calibration: dict[int, dict[str, float]] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def calibrate(self, script: Any) -> dict[str, float]:
        """Offset agent clock -> runner clock, from the tightest of three round trips."""
        best: dict[str, float] | None = None
        for _ in range(3):
            before = self.clock()
            agent = script.exports_sync.clock()
            after = self.clock()
            sample = {"offset": (before + after) / 2 - agent["t"], "rtt_s": after - before}
            if best is None or sample["rtt_s"] < best["rtt_s"]:
                best = sample
        assert best is not None
        best["agent_clock"] = agent["name"]
        return best

    def on_message(self, pid: int, message: Mapping[str, Any]) -> None:
        if message.get("type") == "error":
            self.event("trace_error", pid=pid, error=message.get("description", "?"))
            return
        payload = message.get("payload") or {}
        kind = payload.get("type")
        if kind == "reads":
            self.add_rows(pid, payload["rows"])
        elif kind == "hook":
            fields = {k: payload[k] for k in ("api", "target", "ok", "error") if k in payload}
            self.event("trace_hook", pid=pid, **fields)
        elif kind == "platform":
            self.platform_ok[pid] = bool(payload.get("present"))
            fields = {
                k: payload[k] for k in ("api", "present", "platform", "reason") if k in payload
            }
            self.event("trace_platform", pid=pid, **fields)

    def add_rows(self, pid: int, rows: list[dict[str, Any]]) -> None:
        """Rows of a process whose clock is not calibrated yet wait until it is."""
        with self.lock:
            if pid not in self.sessions:
                self.pending.setdefault(pid, []).extend(rows)
                return
            offset = self.sessions[pid][2]
            for row in rows:
                self.rows.append(session_row(row, pid, offset, self.t0))

    def attach(self, pid: int, name: str) -> None:
        started = self.clock()
        try:
            session = self.device.attach(pid)
            script = session.create_script(self.source, name="reallymuted-native")
            # Until calibrated, rows wait in the agent (its first flush is 200 ms away).
            script.on("message", lambda m, _d, p=pid: self.on_message(p, m))
            script.load()
            calibration = self.calibrate(script)
        except self.errors as exc:
            self.given_up.add(pid)
            self.event("trace_error", pid=pid, comm=name, error=f"{type(exc).__name__}: {exc}")
            return
        with self.lock:
            self.sessions[pid] = (session, script, calibration["offset"])
            early = self.pending.pop(pid, [])
        self.add_rows(pid, early)
        self.calibration[pid] = calibration
        self.event(
            "trace_attach",
            pid=pid,
            comm=name,
            took_s=round(self.clock() - started, 3),
            clock_rtt_s=round(calibration["rtt_s"], 6),
        )
        if self.probe and self.platform_ok.get(pid):
            try:
                result = script.exports_sync.probe()
            except Exception as exc:  # an RPC error of the agent must not end the session
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.event("trace_probe", pid=pid, **result)

    def poll_once(self) -> None:
        for process in self.device.enumerate_processes():
            pid = process.pid
            if process.name not in self.names or pid in self.sessions or pid in self.given_up:
                continue
            self.seen[pid] = self.seen.get(pid, 0) + 1
            if self.seen[pid] >= 2:  # seen on two polls: past its first moments
                self.attach(pid, process.name)

    def start(self) -> None:
        self.poll_once()
        self.poll_once()

        def loop() -> None:
            while not self.stopping.wait(self.poll_s):
                try:
                    self.poll_once()
                except self.errors as exc:
                    self.event("trace_error", error=f"poll: {exc}")

        self.thread = threading.Thread(target=loop, name="host-tracer", daemon=True)
        self.thread.start()

    def activity_since(self, t: float) -> dict[str, Any] | None:
        """The first capture call or read at or after session time ``t``, if any."""
        with self.lock:
            hits = [r for r in self.rows if r["t"] >= t]
        return min(hits, key=lambda r: r["t"]) if hits else None

    def stop(self) -> dict[str, Any]:
        """Drain every agent, measure clock drift, detach; return what the manifest needs."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(5)
        drift = {}
        for pid, (session, script, offset) in list(self.sessions.items()):
            try:
                self.add_rows(pid, script.exports_sync.flush())
                drift[pid] = round(self.calibrate(script)["offset"] - offset, 6)
                script.unload()
                session.detach()
            except Exception:  # gone (frida error) or an agent RPC error: keep what we have
                pass  # the rows up to the last flush are kept
        return {
            "names": sorted(self.names),
            "attached": sorted(self.sessions),
            "platform_present": {str(p): ok for p, ok in self.platform_ok.items()},
            "calibration": {str(p): c for p, c in self.calibration.items()},
            "clock_drift_s": {str(p): d for p, d in drift.items()},
        }


def session_row(row: Mapping[str, Any], pid: int, offset: float, t0: float) -> dict[str, Any]:
    """One mic_trace.jsonl line from an agent row: session time, pid, rounded levels."""
    out = {
        "t": round(row["t"] + offset - t0, 6),
        "api": row["api"],
        "kind": row["kind"],
        "pid": pid,
        "tid": row.get("tid"),
        "frames": row.get("frames"),
        "bytes": row.get("bytes"),
        "peak": None if row.get("peak") is None else round(row["peak"], 6),
        "rms": None if row.get("rms") is None else round(row["rms"], 6),
    }
    for key, value in row.items():
        if key not in out and key != "t":
            out[key] = value
    return out
