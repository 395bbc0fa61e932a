"""The paper's attack with and without the OS-level mute (reallymuted.analysis.attack_guard).

Unit tests: decoded tables of the two arms (the unguarded one with a gain profile per activity,
the guarded one with the zeros a muted stream gives) through the attack's own minutes, the
reference protocol and the grouped test: the unguarded arm is told apart above measured
chance, the guarded one is not; an arm whose evidence contradicts the study is refused.
``testbed``: a real guarded attack session of the webex-2021 profile: the page still posts its
records, each matched to the capture and the collector's log, all with gain 0 but for what the
first tens of ms of the first stream may leave in the first one.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reallymuted.analysis import attack_classifier, attack_guard, attack_telemetry, extract, leakage
from reallymuted.analysis.telemetry import sessions as ts
from reallymuted.config import load_yaml, validate_config
from reallymuted.figures.attack_guard import plot_attack_guard
from reallymuted.io import DataError
from reallymuted.study import ACTIVITIES
from reallymuted.testbed.spec import SessionSpec
from reallymuted.testbed.stimuli import make_stimulus
from reallymuted.testbed.supervisor import run_session

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
PROFILES = {"kb": (75, 45, 37), "vc": (70, 68, 66), "dg": (82, 45, 37)}
SETTINGS = {
    "models": ["majority", "logistic"],
    "seed": 7,
    "grids": {"logistic": {"C": [1.0]}},
    "validation_fraction": 0.25,
    "random_validation_fraction": 0.2,
    "balance_classes": True,
}


def decoded(app: str, guard: str, recordings: int = 4, intervals: int = 6) -> pd.DataFrame:
    """A table shaped like attack_telemetry.csv; guard on: every record's gains 0."""
    rng = np.random.default_rng(1)
    rows = []
    for activity, (hi, mid, lo) in PROFILES.items():
        for rec in range(1, recordings + 1):
            for k in range(1, intervals + 1):
                noise = rng.integers(-2, 3, 3)
                gains = (
                    (hi + noise[0], mid + noise[1], lo + noise[2]) if guard == "off" else (0,) * 3
                )
                rows.append(
                    {
                        "source": "testbed-profile",
                        "stimulus_source": "synthetic",
                        "app": app,
                        "mute_mode": "app",
                        "guard": guard,
                        "stimulus": f"{activity}{rec}d25",
                        "rep": 1,
                        "condition": f"app-{activity}{rec}d25",
                        "activity": activity,
                        "recording": f"{activity}{rec}",
                        "recording_number": rec,
                        "distance_cm": 25,
                        "interval": k,
                        "state": "muted",
                        "matched": True,
                        "audio_max_gain": gains[0],
                        "audio_mean_gain": gains[1],
                        "audio_min_gain": gains[2],
                    }
                )
    return pd.DataFrame(rows)


def arm(app: str, guard: str, tmp_path: Path) -> dict[str, pd.DataFrame]:
    """The arm's files as the rules make them: minutes, then the reference protocol (n = 2)."""
    telemetry = decoded(app, guard)
    names = ("minutes", "metrics", "confusion", "grid", "folds")
    paths = {k: tmp_path / f"{guard}-{k}.csv" for k in names}
    telemetry.to_csv(tmp_path / f"{guard}-telemetry.csv", index=False)
    attack_telemetry.minutes_table(telemetry).to_csv(paths["minutes"], index=False)
    attack_classifier.window_to_files(paths["minutes"], 2, SETTINGS, paths)
    return attack_guard.read_arm({"telemetry": tmp_path / f"{guard}-telemetry.csv", **paths})


def traffic(twins: dict[str, str]) -> pd.DataFrame:
    """Leakage rows of both arms, as results/tables/leakage.csv holds them (their values as
    the leakage test gives them: tests/test_attack.py tests the test)."""
    off = {"accuracy": 0.24, "ci_low": 0.13, "ci_high": 0.33, "p_value": 0.02,
           "verdict": "leaks: above chance"}  # fmt: skip
    on = {"accuracy": 0.09, "ci_low": 0.02, "ci_high": 0.17, "p_value": 0.6,
          "verdict": "no evidence of leakage"}  # fmt: skip
    rows = [{"app": b, "guard": "off", **off} for b in twins.values()]
    rows += [{"app": g, "guard": "on", **on} for g in twins]
    table = pd.DataFrame(rows).assign(
        source="testbed", mute_mode="soft", stimulus_source="synthetic", window_s=2.0,
        windows=54, recordings=18, activities=6, chance=0.09, chance_high=0.19,
        uniform_chance=1 / 6, permutations=50,
    )  # fmt: skip
    return table[leakage.LEAKAGE_COLUMNS]


def test_the_guarded_arm_stays_at_measured_chance_and_the_bare_one_does_not(
    tmp_path: Path,
) -> None:
    twins = {"attack-webex-guarded": "attack-webex", "leak-guarded": "leak"}
    arms = {
        "attack-webex": arm("attack-webex", "off", tmp_path),
        "attack-webex-guarded": arm("attack-webex-guarded", "on", tmp_path),
    }
    table = attack_guard.attack_guard_table(arms, traffic(twins), twins, 2, 3, 100, 39)
    assert list(dict.fromkeys(table.measure)) == list(attack_guard.MEASURES)
    by = {(r.measure, r.client, r.guard, r.statistic.split(" ")[0]): r for r in table.itertuples()}
    on_gain = by[(attack_guard.GAINS, "attack-webex", "on", "mean")]
    assert on_gain.value == 0 and on_gain.high == 0
    assert on_gain.verdict == f"above 0 in 0 of {on_gain.samples} intervals"
    off_gain = by[(attack_guard.GAINS, "attack-webex", "off", "max")]
    assert off_gain.low > 60
    off = by[(attack_guard.GROUPED_TEST, "attack-webex", "off", "accuracy,")]
    on = by[(attack_guard.GROUPED_TEST, "attack-webex", "on", "accuracy,")]
    assert off.value > 0.9 and off.p_value < 0.05 and off.value > off.chance_high
    # constant features: whatever the folds give, the shuffles give as well
    assert on.p_value >= 0.05 and on.verdict == "no evidence above chance"
    assert on.low <= on.value <= on.high
    ref_off = by[(attack_guard.REFERENCE_PROTOCOL, "attack-webex", "off", "macro")]
    ref_on = by[(attack_guard.REFERENCE_PROTOCOL, "attack-webex", "on", "macro")]
    assert ref_off.value > 0.9 and ref_on.value == pytest.approx(1 / 3) and ref_on.chance == 1 / 3
    assert set(table[table.measure == attack_guard.TRAFFIC].client) == {"attack-webex", "leak"}
    values = attack_guard.attack_guard_values(table)
    assert values["guarded_at_chance"] and values["guarded_above_chance"] == []
    assert values["unguarded_above_chance"] == [
        "telemetry classifier (grouped test): attack-webex",
        "traffic leakage test: attack-webex",
        "traffic leakage test: leak",
    ]
    assert values["source"] == "testbed, testbed-profile"
    assert values["source_of"]["attack_guard_traffic_leak_on_p_value"] == "testbed"
    assert set(values["source_of"].values()) == {"testbed", "testbed-profile"}
    telemetry = {g: decoded("attack-webex", g) for g in ("off", "on")}
    plot_attack_guard(table, telemetry, [tmp_path / "attack_guard.png"])
    assert (tmp_path / "attack_guard.png").stat().st_size > 10_000


def test_an_arm_whose_evidence_contradicts_the_study_is_refused(tmp_path: Path) -> None:
    twins = {"attack-webex-guarded": "attack-webex", "leak-guarded": "leak"}
    bare = arm("attack-webex", "off", tmp_path)
    arms = {"attack-webex-guarded": bare}  # an unguarded app's evidence under the guarded name
    with pytest.raises(DataError, match="its sessions say guard \\['off'\\]"):
        attack_guard.attack_guard_table(arms, traffic(twins), twins, 2, 3, 50, 9)
    rows = traffic(twins)
    with pytest.raises(DataError, match="no row for \\['leak-guarded'\\]"):
        attack_guard.traffic_rows(rows[rows.app != "leak-guarded"], twins)
    rows.loc[rows.app == "leak-guarded", "guard"] = "off"
    with pytest.raises(DataError, match="leak-guarded: its sessions say guard off"):
        attack_guard.traffic_rows(rows, twins)


# --- a real guarded attack session (testbed) --------------------------------------------------


@pytest.mark.testbed
def test_a_guarded_attack_session_posts_records_of_silence(tmp_path: Path) -> None:
    """The OS mutes the stream as the page opens it (the schedule starts muted); the page's
    meter hears digital silence and still posts a record per interval, with gains 0."""
    config = validate_config(load_yaml(REPO / "config.yaml"), SCHEMA)
    sessions = copy.deepcopy(config["sessions"])
    sessions["apps"]["attack-webex-guarded"]["schedule"] = [{"state": "muted", "seconds": 10}]
    spec = config["sessions"]["stimuli"]["vc1d25"]
    wav = tmp_path / "vc1d25.wav"
    make_stimulus(spec, wav)
    session = tmp_path / "session"
    manifest = run_session(
        SessionSpec.from_config(sessions, "attack-webex-guarded", "app", "vc1d25", 1, wav), session
    )
    assert manifest["status"] == "ok", manifest["failure"]
    assert manifest["guard"]
    extract.extract_session(session, tmp_path / "p.parquet", tmp_path / "r.parquet")
    ts.write_session(session, tmp_path / "p.parquet", tmp_path / "t.csv", tmp_path / "t.json")
    table = attack_telemetry.session_rows(session, tmp_path / "t.csv", wav, spec, ACTIVITIES)
    print(table[["interval", "audio_max_gain", "audio_mean_gain", "input_dba"]])
    assert len(table) >= 2 and table.matched.all() and (table.guard == "on").all()
    assert table.frame.notna().all() and table.collector_line.notna().all()
    gains = table[list(attack_telemetry.GAIN_COLUMNS.values())].to_numpy(dtype=float)
    assert (gains[1:] == 0).all(), "from the second record on, the app heard only zeros"
    # The first may hold the first stream's first tens of ms, before the guard saw the stream
    # (docs/guard.md: 0-40 ms): a few 10-ms frames of 200, so its mean gain stays near 0.
    assert table.audio_mean_gain.iloc[0] <= 2 and table.audio_min_gain.iloc[0] == 0
    assert (table.input_dba > -60).all(), "while the OS witness fed the recording"
    events = [e for e in pd.read_json(session / "events.jsonl", lines=True).itertuples()]
    started = [e for e in events if e.event == "page_telemetry_start"]
    assert len(started) == 1
    if started[0].started_on == "silence":  # 1 s of nothing but zeros, and the clock started
        assert started[0].silent_frames_skipped >= 100
    else:  # the first stream's leak started it: the first record holds it
        assert started[0].started_on == "signal" and table.audio_max_gain.iloc[0] > 0
