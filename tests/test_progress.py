"""Progress of a run's sessions, from the plan the workflow writes and the manifests on disk."""

from __future__ import annotations

import json
import time
from pathlib import Path

from reallymuted.testbed.progress import progress, progress_line, write_plan


def test_progress_counts_manifests_and_paces_by_this_runs_sessions(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    folders = [str(tmp_path / f"raw/app/ctrl-tone/rep{i}") for i in range(1, 6)]
    old = tmp_path / "raw/app/ctrl-tone/rep1"  # done by an earlier run: not this run's pace
    old.mkdir(parents=True)
    (old / "manifest.json").write_text(
        json.dumps({"start": {"epoch": 1.0}, "supervisor": {"wall_s": 1000.0}})
    )
    write_plan(folders, parallel=2, path=plan)
    assert progress_line(plan) == "sessions: 1/5 done"  # no pace yet
    for folder in folders[1:3]:
        Path(folder).mkdir(parents=True)
        (Path(folder) / "manifest.json").write_text(
            json.dumps({"start": {"epoch": time.time()}, "supervisor": {"wall_s": 60.0}})
        )
    state = progress(plan)
    assert state == {"planned": 5, "done": 3, "seconds_left": 60.0}  # 2 left, 2 at once
    assert progress_line(plan) == "sessions: 3/5 done, about 1 min left"
    (Path(folders[1]) / "manifest.json").unlink()  # a failed session leaves no manifest
    assert progress(plan)["done"] == 2


def test_no_plan_no_progress(tmp_path: Path) -> None:
    assert progress_line(tmp_path / "missing.json") is None
