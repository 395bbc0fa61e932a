"""The specification of one testbed session: everything that determines it, and nothing that
varies from run to run. Built from the study's configuration (:meth:`SessionSpec.from_config`)
or by hand (the command line of :mod:`reallymuted.testbed.supervisor`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reallymuted.study import driver_options
from reallymuted.testbed.drivers import get_driver

STATES = ("unmuted", "muted")  # the states of a schedule's phases


@dataclasses.dataclass
class SessionSpec:
    """Everything that determines one session (and nothing that varies run to run)."""

    app: str
    driver: str
    mode: str
    stimulus: str
    stimulus_path: str
    rep: int
    schedule: list[dict[str, Any]]  # [{"state": "unmuted"|"muted", "seconds": s}, ...]
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    capture_tool: str = "dumpcap"
    lead_s: float = 1.0  # microphone fed (and traced) at least this long before join
    tail_s: float = 0.5  # capture and tracing continue this long after leave
    timeout_margin_s: float = 60.0  # time allowed beyond lead + schedule + tail
    rate: int = 48000
    channels: int = 1
    tick_ms: int = 20
    pipe_bytes: int = 4096
    suspend_timeout_s: int = 1
    # SCHED_FIFO priority of the paced writer and of PulseAudio's pipe-source thread (0: off)
    realtime_priority: int = 5
    trace_poll_s: float = 0.05
    # Only for measuring the tracer's own cost (make bench): without it the session has no
    # app-level witness, and mic_trace.jsonl holds the OS witness alone.
    trace_app: bool = True
    # The OS-level mute (issue 15, docs/guard.md): `reallymuted guard` mutes the client's
    # capture streams at the session's PulseAudio whenever the schedule mutes the client.
    guard: bool = False

    @property
    def condition(self) -> str:
        return f"{self.mode}-{self.stimulus}"

    @property
    def schedule_s(self) -> float:
        return float(sum(p["seconds"] for p in self.schedule))

    def validate(self) -> None:
        if not self.schedule:
            raise ValueError("the schedule has no phases")
        for phase in self.schedule:
            if phase.get("state") not in STATES or float(phase.get("seconds", 0)) <= 0:
                raise ValueError(f"bad schedule phase {phase!r}: need state in {STATES}, seconds>0")
        get_driver(self.driver).check(self.mode, self.options)
        if self.guard and get_driver(self.driver).runner == "host":
            # the guard mutes streams on the session's PulseAudio: a Windows or macOS host's
            # sound server is not one, and its manifest would say "guard" for nothing
            raise ValueError(f"guard: {self.driver} sessions run on a host the guard cannot reach")

    @classmethod
    def from_config(
        cls,
        sessions: Mapping[str, Any],
        app: str,
        mode: str,
        stimulus: str,
        rep: int,
        stimulus_path: str | Path,
    ) -> SessionSpec:
        """The spec of one session of the study matrix in ``config['sessions']``."""
        if app not in sessions["apps"]:
            raise ValueError(f"app {app!r} is not in sessions.apps")
        entry = dict(sessions["apps"][app])
        if mode not in entry["modes"]:
            raise ValueError(f"mode {mode!r} is not configured for app {app!r}")
        audio_cfg = sessions.get("audio", {})
        return cls(
            app=app,
            driver=entry["driver"],
            mode=mode,
            stimulus=stimulus,
            stimulus_path=str(stimulus_path),
            rep=int(rep),
            schedule=[dict(p) for p in entry.get("schedule") or sessions["schedule"]],
            options=driver_options(entry),
            capture_tool=sessions.get("capture_tool", "dumpcap"),
            lead_s=float(sessions.get("lead_s", 1.0)),
            tail_s=float(sessions.get("tail_s", 0.5)),
            timeout_margin_s=float(sessions.get("timeout_margin_s", 60)),
            rate=int(audio_cfg.get("rate", 48000)),
            tick_ms=int(audio_cfg.get("tick_ms", 20)),
            pipe_bytes=int(audio_cfg.get("pipe_bytes", 4096)),
            suspend_timeout_s=int(audio_cfg.get("suspend_timeout_s", 1)),
            realtime_priority=int(audio_cfg.get("realtime_priority", 5)),
            guard=bool(entry.get("guard", False)),
        )


def rule_params(sessions: Mapping[str, Any], app: str) -> dict[str, Any]:
    """The config of one app's sessions only, so that editing another app reruns nothing
    (nor editing what only selects sessions: its repetitions and stimulus kinds, or the
    shared schedule of an app that has its own)."""
    entry = {
        k: v for k, v in sessions["apps"][app].items() if k not in ("repetitions", "stimulus_kinds")
    }
    keep = ("schedule", "lead_s", "tail_s", "timeout_margin_s", "capture_tool", "audio")
    shared = {key: sessions[key] for key in keep if not (key == "schedule" and "schedule" in entry)}
    return {**shared, "apps": {app: entry}}
