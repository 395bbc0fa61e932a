"""The bench's comparison of two runs of one study matrix (reallymuted.bench.compare), on the
three recorded sessions of tests/data/sessions analysed by the study's own functions."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from reallymuted.analysis import extract, micpolicy
from reallymuted.bench.compare import beside_yardstick, compare_runs
from reallymuted.bench.study_time import study_time
from reallymuted.paths import RAW, VALUES, analysis_of
from reallymuted.testbed.audio import OS_API

RECORDED = [
    "control-stops/ctrl-tone/rep1",
    "baresip-pcmu/ctrl-tone/rep1",
    "chromium/soft-tone/rep1",
]
# the recordings' muted phase is 1.5 s: a shorter grace than the study's (as test_apps.py)
PARAMS = micpolicy.PolicyParams(grace_s=0.3)


def analysed_run(workdir: Path, test_data: Path, edit=None) -> Path:
    """The recorded sessions as one run's raw evidence (``edit`` may change a session's
    files first), analysed per session and into the study's tables and named values."""
    tables: dict[str, list[str]] = {"states": [], "policy": [], "flows": []}
    for key in RECORDED:
        raw = workdir / RAW / key
        shutil.copytree(test_data / "sessions" / key, raw)
        if edit:
            edit(key, raw)
        out = workdir / analysis_of(f"{RAW}/{key}")
        out.mkdir(parents=True)
        extract.extract_session(raw, out / "packets.parquet", out / "mic_reads.parquet")
        files = {name: out / f"{name}.{'json' if name == 'policy' else 'csv'}" for name in tables}
        micpolicy.write_session_analysis(
            raw, out / "packets.parquet", out / "mic_reads.parquet", files, PARAMS
        )
        for name, path in files.items():
            tables[name].append(str(path))
    study = {
        "states": workdir / "results/tables/session_states.csv",
        "policy": workdir / "results/tables/mic_policy.csv",
        "flows": workdir / "results/tables/session_flows.csv",
        "values": workdir / VALUES / "testbed.json",
    }
    for path in study.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    micpolicy.write_tables(tables["states"], tables["policy"], tables["flows"], study)
    return workdir


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = Path(__file__).parent / "data"
    return analysed_run(tmp_path_factory.mktemp("baseline"), data)


def test_two_runs_of_the_same_evidence_measured_the_same(
    baseline: Path, test_data: Path, tmp_path: Path
) -> None:
    comparison = compare_runs(baseline, analysed_run(tmp_path, test_data))
    summary = comparison["summary"]
    assert comparison["labels_identical"]
    assert summary["sessions_compared"] == len(RECORDED)
    assert summary["session_label_changes"] == summary["study_label_changes"] == 0
    assert summary["named_values_compared"] > 0
    assert summary["named_values_changed"] == 0
    assert summary["trace_errors_baseline"] == summary["trace_errors_measured"]


def test_a_lost_attach_and_a_silent_app_witness_are_reported(
    baseline: Path, test_data: Path, tmp_path: Path
) -> None:
    """The measured run's Chromium session lost its tracer's attach: an attach failure in its
    events and no app-level read in its trace. Its label and the study's values change."""

    def lose_the_attach(key: str, raw: Path) -> None:
        if not key.startswith("chromium/"):
            return
        trace = raw / "mic_trace.jsonl"
        lines = trace.read_text().splitlines()
        trace.write_text("".join(f"{x}\n" for x in lines if json.loads(x)["api"] == OS_API))
        with (raw / "events.jsonl").open("a") as events:
            events.write(json.dumps({"t": 0.5, "event": "trace_error", "comm": "chrome"}) + "\n")

    comparison = compare_runs(baseline, analysed_run(tmp_path, test_data, lose_the_attach))
    summary = comparison["summary"]
    assert not comparison["labels_identical"]
    assert summary["trace_errors_measured"] == summary["trace_errors_baseline"] + 1
    assert [c["session"] for c in comparison["session_label_changes"]] == [RECORDED[2]]
    assert summary["named_values_changed"] > 0
    assert all(c["name"].startswith("testbed.json:") for c in comparison["named_value_changes"])
    # beside a repeat that measured the same, every value the lost attach moved moved only here
    repeat = compare_runs(baseline, analysed_run(tmp_path / "repeat", test_data))
    beside = beside_yardstick(comparison, repeat)
    assert beside["named_values_moved_yardstick"] == beside["moved_in_both"] == 0
    assert beside["moved_only_here"] == [c["name"] for c in comparison["named_value_changes"]]


def test_a_study_runs_time_is_split_at_its_first_and_last_session(baseline: Path) -> None:
    """The three recordings ran one after another (09:57:58 to 09:58:18 on 21 November)."""
    first = datetime.fromisoformat("2026-11-21T09:57:58.141018+00:00").timestamp()
    last = datetime.fromisoformat("2026-11-21T09:58:18.029488+00:00").timestamp()
    time = study_time(baseline, started=first - 10.0, ended=last + 5.0, at_once=2)
    assert time["sessions"] == len(RECORDED)
    assert time["before_first_session_s"] == pytest.approx(10.0, abs=0.01)
    assert time["after_last_session_s"] == pytest.approx(5.0, abs=0.01)
    assert time["sessions_span_s"] == pytest.approx(last - first, abs=0.01)
    assert time["wall_s"] == pytest.approx(time["sessions_span_s"] + 15.0, abs=0.02)
    # each recording's schedule is 3.5 s; two at a time halve the floor
    assert time["schedule_sum_s"] == pytest.approx(3 * 3.5, abs=0.01)
    assert time["schedule_floor_s"] == pytest.approx(time["schedule_sum_s"] / 2, abs=0.01)
    # one at a time, with short gaps between them
    assert 0.9 < time["mean_sessions_running"] <= 1.0
