"""Progress of a run's sessions: how many of those planned are done, and the time left.

The workflow writes the plan when a run starts (:func:`write_plan`, the sessions' rule file's
``onstart``); every session job, when it ends, counts the planned sessions whose manifest
exists and says how long the rest should take at the pace of this run's sessions so far
(:func:`progress_line`). Snakemake's own "N of M steps" counts every job alike; sessions are
most of a study's wall time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reallymuted.io import write_json
from reallymuted.paths import MANIFEST, SESSION_PLAN
from reallymuted.testbed.contract import read_json


def write_plan(folders: Iterable[str], parallel: int, path: str | Path = SESSION_PLAN) -> None:
    """Record the session folders this run plans and how many run at once."""
    write_json(
        path, {"started_epoch": time.time(), "parallel": parallel, "sessions": list(folders)}
    )


def progress(path: str | Path = SESSION_PLAN) -> dict[str, Any] | None:
    """Sessions planned and done, and the seconds left at this run's pace; None without a
    plan (a session run by hand)."""
    plan = read_json(Path(path))
    if not plan:
        return None
    walls = []
    done = 0
    for folder in plan["sessions"]:
        manifest = Path(folder) / MANIFEST
        if not manifest.is_file():
            continue
        done += 1
        data = read_json(manifest) or {}
        # only this run's sessions set the pace (a rerun finds earlier ones done)
        if (data.get("start") or {}).get("epoch", 0) >= plan["started_epoch"]:
            walls.append(float((data.get("supervisor") or {}).get("wall_s", 0.0)))
    planned = len(plan["sessions"])
    left = planned - done
    seconds_left = (
        left * (sum(walls) / len(walls)) / max(1, int(plan["parallel"])) if walls else None
    )
    return {"planned": planned, "done": done, "seconds_left": seconds_left}


def progress_line(path: str | Path = SESSION_PLAN) -> str | None:
    """``sessions: 12/58 done, about 9 min left`` (None without a plan)."""
    state = progress(path)
    if state is None:
        return None
    line = f"sessions: {state['done']}/{state['planned']} done"
    if state["done"] < state["planned"] and state["seconds_left"] is not None:
        minutes = state["seconds_left"] / 60
        line += f", about {minutes:.0f} min left" if minutes >= 1 else ", under a minute left"
    return line
