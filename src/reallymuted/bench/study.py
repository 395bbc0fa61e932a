"""Benchmarks of the study as a whole: its reference part, planning a large study, and the
default quick study end to end with its sessions one at a time and several at once."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from reallymuted.bench.common import (
    BASELINE_REV,
    REPO,
    baseline_checkout,
    code_env,
    log,
    measure_command,
    snakemake_command,
)
from reallymuted.bench.study_time import study_time
from reallymuted.io import write_json

# A study this size must plan within these (issue 14).
PLAN_SESSIONS, PLAN_TARGET_S, PLAN_TARGET_MB = 10_000, 30.0, 1024.0
# Its time is the median of this many plans: one plan of the same study took 25.6 s and 31.2 s
# an hour apart on this VM (7 December 2026).
PLAN_REPEATS = 3
REFERENCE_TARGET_S = 60.0
STUDY_TARGET_S = 12 * 60.0


def _run_workflow(
    code: Path, config: dict[str, Any], cores: int, *extra: str, workdir: Path | None = None
) -> dict[str, Any]:
    """``code``'s workflow with ``config``, in ``workdir`` (a scratch one by default)."""
    with tempfile.TemporaryDirectory(prefix="reallymuted-bench-") as scratch:
        folder = workdir or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        command = snakemake_command(folder, cores, *extra, code=code)
        return measure_command(command, folder, env=code_env(code))


def _reference_only(code: Path) -> dict[str, Any]:
    config = yaml.safe_load((code / "config.yaml").read_text())
    config["stages"] = {name: name == "reference" for name in config["stages"]}
    return config


def bench_reference_study(out_dir: Path, cores: int = 2) -> dict[str, Any]:
    """The reference part of the default study from nothing, by the baseline revision's code
    and by this checkout's, one after the other on the same machine."""
    with baseline_checkout() as old:
        log.info("reference_study: baseline (%s) …", BASELINE_REV)
        baseline = _run_workflow(old, _reference_only(old), cores)
    log.info("reference_study: this checkout …")
    measured = _run_workflow(REPO, _reference_only(REPO), cores)
    ok = baseline["exit_status"] == 0 and measured["exit_status"] == 0
    result = {
        "benchmark": "reference_study",
        "what": "user study, telemetry, classifier (all windows, models), claims, from "
        f"scratch with `snakemake -c {cores}`; baseline: the same by revision {BASELINE_REV}",
        "cores": cores,
        "baseline": baseline["wall_s"],
        "measured": measured["wall_s"],
        "ratio": round(baseline["wall_s"] / measured["wall_s"], 2),
        "peak_tree_rss_mb": {
            "baseline": baseline["peak_tree_rss_mb"],
            "measured": measured["peak_tree_rss_mb"],
        },
        "runs": {"baseline": baseline, "measured": measured},
        "target": f"wall time under {REFERENCE_TARGET_S:.0f} s on {cores} cores",
        "met": ok and measured["wall_s"] < REFERENCE_TARGET_S,
    }
    write_json(out_dir / "reference_study.json", result)
    return result


def _repetitions_for(code: Path, sessions_wanted: int) -> tuple[int, int]:
    """(repetitions, sessions): the fewest repetitions whose matrix holds ``sessions_wanted``."""
    from reallymuted.study import matrix

    config = yaml.safe_load((code / "config.yaml").read_text())
    config["sessions"]["repetitions"] = 1
    one = len(matrix(config["sessions"]))
    config["sessions"]["repetitions"] = 2
    per_rep = len(matrix(config["sessions"])) - one  # apps with their own repetitions stay
    reps = max(1, -(-(sessions_wanted - (one - per_rep)) // per_rep))
    return reps, one - per_rep + reps * per_rep


def _plan(code: Path, repetitions: int) -> dict[str, Any]:
    config = yaml.safe_load((code / "config.yaml").read_text())
    config["sessions"]["repetitions"] = repetitions
    return _run_workflow(code, config, 2, "-n", "-q")


# Snakemake's own cost of planning: a workflow of nothing but two jobs per session shaped like
# the study's (a recording job with five outputs, an analysis job with seven, each with a log
# and a shell command, as the study's per-session rules have), so the study's time can be read
# against what Snakemake needs for that many jobs at all. It collects garbage as the study's
# workflow does.
PLANNING_FLOOR_SNAKEFILE = """
from reallymuted.config import space_out_full_collections
space_out_full_collections()
SESSIONS = range(int(config["sessions"]))
rule all:
    input: expand("tables/{i}/states.csv", i=SESSIONS)
rule record:
    input: "stimulus.wav"
    output:
        multiext("raw/{i}/", "manifest.json", "events.jsonl", "traffic.pcapng"),
        multiext("raw/{i}/", "mic_trace.jsonl", "client.log"),
    log: "logs/raw/{i}.log"
    shell: "true"
rule analyse:
    input: "raw/{i}/manifest.json", "raw/{i}/traffic.pcapng"
    output:
        multiext("tables/{i}/", "packets.parquet", "mic_reads.parquet", "states.csv"),
        multiext("tables/{i}/", "policy.json", "flows.csv", "timeline.png", "timeline.pdf"),
    log: "logs/tables/{i}.log"
    shell: "true"
"""


def _plan_floor(sessions: int) -> dict[str, Any]:
    """`snakemake -n -q` of PLANNING_FLOOR_SNAKEFILE for ``sessions`` sessions."""
    with tempfile.TemporaryDirectory(prefix="reallymuted-bench-floor-") as scratch:
        folder = Path(scratch)
        (folder / "Snakefile").write_text(PLANNING_FLOOR_SNAKEFILE)
        (folder / "stimulus.wav").touch()
        command = [sys.executable, "-m", "snakemake", "-c", "2", "-n", "-q"]
        return measure_command([*command, "--config", f"sessions={sessions}"], folder)


def bench_planning_scale(out_dir: Path, baseline_sessions: int = 500) -> dict[str, Any]:
    """`snakemake -n` for a study of 10 000 sessions (the default study's apps, repetitions
    raised), and for the baseline revision at a size it accepts and plans in minutes."""
    reps, sessions = _repetitions_for(REPO, PLAN_SESSIONS)
    plans = []
    for i in range(PLAN_REPEATS):
        log.info("planning_scale: %d sessions (repetitions %d), plan %d …", sessions, reps, i + 1)
        plans.append(_plan(REPO, reps))
    # the median plan's time (this VM's plans of one study spread by several seconds) and the
    # largest peak of memory
    measured = {
        **sorted(plans, key=lambda run: run["wall_s"])[len(plans) // 2],
        "wall_s_each": [run["wall_s"] for run in plans],
        "peak_tree_rss_mb": max(run["peak_tree_rss_mb"] for run in plans),
    }
    small_reps, small = _repetitions_for(REPO, baseline_sessions)
    log.info("planning_scale: %d sessions, this checkout and %s …", small, BASELINE_REV)
    same_size = _plan(REPO, small_reps)
    with baseline_checkout() as old:
        baseline = _plan(old, small_reps)
    log.info("planning_scale: Snakemake's floor, %d sessions of two jobs …", sessions)
    floor = _plan_floor(sessions)
    per_k = {
        "baseline": round(1000 * baseline["wall_s"] / small, 2),
        "measured_small": round(1000 * same_size["wall_s"] / small, 2),
        "measured": round(1000 * measured["wall_s"] / sessions, 2),
    }
    ok = all(r["exit_status"] == 0 for r in (*plans, same_size, baseline, floor))
    result = {
        "benchmark": "planning_scale",
        "what": f"snakemake -n -q on the default study with repetitions raised: {sessions} "
        f"sessions by this checkout (the median of {PLAN_REPEATS} plans); {small} sessions by "
        f"it and by revision {BASELINE_REV} (whose schema refuses more than 100 repetitions); "
        "every stage on",
        "sessions": sessions,
        "wall_s": measured["wall_s"],
        "wall_s_each": measured["wall_s_each"],
        "peak_tree_rss_mb": measured["peak_tree_rss_mb"],
        "seconds_per_1000_sessions": per_k,
        "baseline": per_k["baseline"],
        "measured": per_k["measured"],
        "ratio": round(per_k["baseline"] / per_k["measured"], 2),
        "snakemake_floor": {
            "what": "the same number of sessions planned by a workflow of nothing but two "
            "jobs per session shaped like the study's (bench.study.PLANNING_FLOOR_SNAKEFILE)",
            "wall_s": floor["wall_s"],
            "peak_tree_rss_mb": floor["peak_tree_rss_mb"],
        },
        "runs": {
            "measured": measured,
            "measured_small": same_size,
            "baseline": baseline,
            "snakemake_floor": floor,
        },
        "target": f"{PLAN_SESSIONS} sessions planned in under {PLAN_TARGET_S:.0f} s and "
        f"{PLAN_TARGET_MB:.0f} MB (ratio: seconds per 1000 sessions, baseline / measured)",
        "met": ok
        and measured["wall_s"] < PLAN_TARGET_S
        and measured["peak_tree_rss_mb"] < PLAN_TARGET_MB,
    }
    write_json(out_dir / "planning_scale.json", result)
    return result


def _in_brief(
    run: dict[str, Any], comparison: dict[str, Any], yardstick: dict[str, Any]
) -> dict[str, Any]:
    """One run of the study beside the first serial run (``comparison``), and the values it
    moved beside those the serial repeat moved (``yardstick``)."""
    from reallymuted.bench.compare import beside_yardstick

    brief = {
        "sessions_at_once": run["sessions_at_once"],
        "wall_s": run["wall_s"],
        "labels_identical": comparison["labels_identical"],
        **comparison["summary"],
    }
    if comparison is not yardstick:
        brief["beside_serial_again"] = beside_yardstick(comparison, yardstick)
    return brief


def bench_study_parallel(
    out_dir: Path,
    cores: int = 2,
    keep_runs: Path | None = None,
    also_at_once: tuple[int, ...] = (2,),
) -> dict[str, Any]:
    """The default quick study end to end from nothing (after set-up), its sessions one at a
    time (the baseline), ``sessions.parallel`` at a time as config.yaml sets it and each of
    ``also_at_once`` (the candidates for the default), and one at a time again; then what the
    runs measured, session by session (reallymuted.bench.compare). The measured value is the
    default's run: the first serial one when config.yaml runs one session at a time.

    The second serial run is the yardstick: what two runs of the same matrix differ by when
    nothing but the moment changed. A value that moves under parallel sessions only says
    something about parallelism if it moves more than that. It runs last, so a drift of the
    machine over the hour shows as a serial difference too. With ``keep_runs`` the study
    folders stay there for a closer look (about 150 MB each)."""
    from reallymuted.bench.compare import compare_runs

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    parallel = int(config["sessions"]["parallel"])
    levels = sorted({parallel, *also_at_once} - {1})
    order = [("serial", 1), *((f"parallel{n}", n) for n in levels), ("serial_again", 1)]
    runs = {}
    with tempfile.TemporaryDirectory(prefix="reallymuted-bench-study-") as temporary:
        scratch = keep_runs or Path(temporary)
        for name, limit in order:
            config["sessions"]["parallel"] = limit
            workdir = scratch / name
            shutil.rmtree(workdir, ignore_errors=True)
            log.info("study_parallel: the default study, %d session(s) at a time …", limit)
            runs[name] = _run_workflow(REPO, config, cores, workdir=workdir)
            runs[name]["sessions_at_once"] = limit
            runs[name]["time"] = study_time(
                workdir, runs[name]["started_epoch"], runs[name]["ended_epoch"], limit
            )
        comparisons = {
            name: compare_runs(scratch / "serial", scratch / name) for name, _ in order[1:]
        }
    default = f"parallel{parallel}" if parallel > 1 else "serial"
    repeat = comparisons["serial_again"]
    comparison = comparisons.get(default, repeat)  # one at a time: beside its repeat
    serial, fast = runs["serial"]["wall_s"], runs[default]["wall_s"]
    ok = all(r["exit_status"] == 0 for r in runs.values())
    result = {
        "benchmark": "study_parallel",
        "what": f"the default study (config.yaml, every stage) end to end from nothing with "
        f"`snakemake -c {cores}`, sessions one at a time (baseline), {', '.join(map(str, levels))} "
        f"at a time and one at a time again; measured: config.yaml's {parallel} at a time; the "
        "comparisons are per session, per policy label and per named value, each run against "
        "the first serial one",
        "sessions_parallel": parallel,
        "baseline": serial,
        "measured": fast,
        "ratio": round(serial / fast, 2),
        "comparison": comparison,
        "serial_repeat": repeat,
        # every level run, beside the yardstick (serial_again), in brief
        "levels": {
            name: _in_brief(runs[name], found, repeat) for name, found in comparisons.items()
        },
        "runs": {k: {**v, "output_tail": v["output_tail"][-600:]} for k, v in runs.items()},
        "target": f"the study in at most {STUDY_TARGET_S / 60:.0f} min on {cores} cores, "
        "measuring the same as one session at a time (identical policy labels)",
        "met": ok and fast <= STUDY_TARGET_S and comparison["labels_identical"],
    }
    write_json(out_dir / "study_parallel.json", result)
    for name, found in comparisons.items():
        log.info("study_parallel: %s against serial %s", name, json.dumps(found["summary"]))
    return result
