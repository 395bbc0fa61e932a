"""Where a whole study run's wall time went: before its first session, while sessions ran, and
after its last, from the session manifests' own start and end times (``supervisor``).

A study can be no faster than its schedules divided by the sessions run at once; this says how
far the run was from that floor, and how much of the rest was sessions' set-up and teardown and
how much the stages that run before and after them.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from reallymuted.paths import MANIFEST, RAW


def _epoch(utc: str) -> float:
    return datetime.fromisoformat(utc).timestamp()


def study_time(workdir: Path, started: float, ended: float, at_once: int) -> dict[str, Any]:
    """The run of the study in ``workdir`` between the epoch times ``started`` and ``ended``,
    ``at_once`` sessions at a time at most."""
    spans, schedule, overhead = [], 0.0, 0.0
    for path in sorted((workdir / RAW).glob(f"*/*/*/{MANIFEST}")):
        supervisor = json.loads(path.read_text()).get("supervisor") or {}
        if "started_utc" not in supervisor:
            continue  # a replayed or failed session: no times of its own
        spans.append((_epoch(supervisor["started_utc"]), _epoch(supervisor["ended_utc"])))
        schedule += float(supervisor["schedule_s"])
        overhead += float(supervisor["overhead_s"])
    if not spans:
        return {"sessions": 0, "wall_s": round(ended - started, 2)}
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    busy = sum(e - s for s, e in spans)
    return {
        "sessions": len(spans),
        "wall_s": round(ended - started, 2),
        "before_first_session_s": round(first - started, 2),
        "sessions_span_s": round(last - first, 2),
        "after_last_session_s": round(ended - last, 2),
        "schedule_sum_s": round(schedule, 2),
        "overhead_sum_s": round(overhead, 2),
        # the floor: every session's schedule, at_once at a time, and nothing else
        "schedule_floor_s": round(schedule / at_once, 2),
        "mean_sessions_running": round(busy / (last - first), 2) if last > first else None,
    }
