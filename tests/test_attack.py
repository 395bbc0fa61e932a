"""The attack on captured telemetry (reallymuted.analysis.attack and its attack_input,
attack_telemetry and attack_classifier).

Unit tests: the A-weighting against IEC 61672 values, the reconstruction of the samples fed in
an interval from the OS witness's ticks, the per-interval table's classifier shape, and the
classifier's cross-validation, which must never put one recording on both sides of a split.
``testbed``: two real, short attack sessions of one recording at 100 cm and at 10 cm, through
the session runner, the extraction and the telemetry decoder: every decoded gain is matched to
the collector's log, explained by the samples fed, and rises when the attenuation is removed.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reallymuted.analysis import (
    attack,
    attack_classifier,
    attack_input,
    attack_telemetry,
    classifier,
    classifier_training,
    extract,
    leakage,
)
from reallymuted.analysis.telemetry import gainmodel
from reallymuted.analysis.telemetry import sessions as ts
from reallymuted.config import load_yaml, validate_config
from reallymuted.study import ACTIVITIES
from reallymuted.testbed.spec import SessionSpec
from reallymuted.testbed.stimuli import make_stimulus
from reallymuted.testbed.supervisor import run_session

SCHEMA = Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"
RATE = 48000


# --- the input level -------------------------------------------------------------------------


def test_a_weighting_matches_iec_61672() -> None:
    # IEC 61672-1 table 3 (rounded to 0.1 dB) at the exact frequencies of nominal 31.5 Hz,
    # 100 Hz, 1 kHz, 4 kHz and 10 kHz
    freqs = [10**1.5, 100, 1000, 10**3.6, 10000]
    expected = [-39.4, -19.1, 0.0, 1.0, -2.5]
    assert attack_input.a_weighting_db(freqs) == pytest.approx(expected, abs=0.06)
    assert attack_input.a_weighting_db(0) == -np.inf


def test_weighted_level_of_sines() -> None:
    t = np.arange(RATE) / RATE
    full = np.sin(2 * np.pi * 1000 * t)
    assert attack_input.level_db(full, RATE) == pytest.approx(-3.01, abs=0.01)
    assert attack_input.level_db(full, RATE, weighted=True) == pytest.approx(-3.01, abs=0.01)
    low = 0.1 * np.sin(2 * np.pi * 100 * t)
    assert attack_input.level_db(low, RATE, weighted=True) == pytest.approx(
        -23.01 - 19.14, abs=0.02
    )
    # a two-tone mix: the powers add after weighting
    mix = 0.5 * np.sin(2 * np.pi * 1000 * t) + 0.5 * np.sin(2 * np.pi * 100 * t)
    power = 0.125 + 0.125 * 10 ** (-19.145 / 10)
    assert attack_input.level_db(mix, RATE, weighted=True) == pytest.approx(
        10 * np.log10(power), abs=0.01
    )
    assert np.isnan(attack_input.level_db(np.empty(0), RATE))
    assert attack_input.level_db(np.zeros(10), RATE) == -np.inf


def test_fed_samples_follow_the_writers_tick_grid() -> None:
    """Tick i plays chunk i mod chunks (the WAV cut to whole ticks), accepted or not."""
    per_tick = 4
    stimulus = np.arange(22, dtype=float)  # 5 whole ticks; the last 2 samples never play
    ticks = pd.DataFrame({"tick": [0, 1, 2, 5, 6, 11], "frames": [4, 0, 4, 4, 4, 4]})
    fed = attack_input.fed_samples(ticks, stimulus, per_tick)
    expected = [0, 1, 2, 3, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7]
    assert fed.tolist() == expected
    levels = attack_input.input_levels(
        pd.DataFrame({"t": [0.0, 0.02, 0.04], "tick": [0, 1, 2], "frames": [4, 0, 4]}),
        stimulus / 100,
        per_tick,
        200,  # 2 samples per 10 ms frame
        0.0,
        0.04,
    )
    assert levels["input_ticks"] == 1 and levels["input_seconds"] == pytest.approx(0.02)
    fed = np.array([0, 1, 2, 3]) / 100
    assert levels["input_dbfs"] == pytest.approx(10 * np.log10(np.mean(fed**2)))
    gains = gainmodel.frame_gain(np.sqrt(np.mean(fed.reshape(2, 2) ** 2, axis=1)))
    assert (levels["model_max_gain"], levels["model_min_gain"]) == (gains.max(), gains.min())


# --- the per-interval table and the classifier ------------------------------------------------


def captured_table(recordings: int = 3, intervals: int = 8, seed: int = 0) -> pd.DataFrame:
    """A table shaped like attack_telemetry.csv: each activity a distinct gain profile."""
    rng = np.random.default_rng(seed)
    profiles = {"kb": (75, 45, 37), "vc": (70, 68, 66), "dg": (82, 45, 37), "cm": (74, 66, 58)}
    rows = []
    for activity, (hi, mid, lo) in profiles.items():
        for rec in range(1, recordings + 1):
            for distance in (10, 50):
                shift = -14 if distance == 50 else 0
                for k in range(1, intervals + 1):
                    noise = rng.integers(-2, 3, 3)
                    rows.append(
                        {
                            "source": attack.SOURCE,
                            "stimulus_source": "synthetic",
                            "app": "attack-webex",
                            "mute_mode": "app",
                            "stimulus": f"{activity}{rec}d{distance}",
                            "rep": 1,
                            "condition": f"app-{activity}{rec}d{distance}",
                            "activity": activity,
                            "recording": f"{activity}{rec}",
                            "recording_number": rec,
                            "distance_cm": distance,
                            "interval": k,
                            "state": "muted",
                            "matched": True,
                            "audio_max_gain": hi + shift + noise[0],
                            "audio_mean_gain": mid + shift + noise[1],
                            "audio_min_gain": lo + shift // 2 + noise[2],
                            "input_dba": mid + shift - 100 + rng.normal(0, 1),
                            "model_mean_gain": mid + shift + noise[1],
                            "page_gaps": False,
                            "frame": 100 + k,
                            "collector_line": 2 + k,
                        }
                    )
    return pd.DataFrame(rows)


def test_minutes_keep_matched_muted_intervals_and_cut_at_gaps() -> None:
    table = captured_table(recordings=3, intervals=6)
    session = table.stimulus == "kb1d10"
    table.loc[session & (table.interval == 3), "matched"] = False
    table.loc[(table.stimulus == "vc2d50") & (table.interval == 1), "state"] = "mixed"
    minutes = attack_telemetry.minutes_table(table)
    assert len(minutes) == len(table) - 2
    assert set(minutes.columns) >= set(classifier.MINUTE_COLUMNS) | {"group", "stimulus_source"}
    kb = minutes[minutes.video == "kb1d10"]
    assert (
        kb.recording_id.tolist()
        == ["attack-webex/app-kb1d10/rep1"] * 2 + ["attack-webex/app-kb1d10/rep1#1"] * 3
    ), "no window spans the missing record"
    assert set(kb.group) == {"kb1"} and (minutes.source == attack.SOURCE).all()
    # windows stay in one series; their group is the recording, shared across distances
    w = classifier.windows(minutes, 3)
    assert set(w.groups) == set(table.recording)
    assert attack_telemetry.windows_per_activity(minutes, 3)["kb"] == 3 * 2 * 4 - 3


def test_cross_validation_never_puts_a_recording_on_both_sides(monkeypatch) -> None:
    minutes = attack_telemetry.minutes_table(captured_table())
    seen = []
    real = classifier_training.evaluate_protocol

    def spy(dev, evals, n, *args, **kwargs):
        dev_groups = set(classifier.windows(dev, n).groups)
        for frame in evals.values():
            assert not dev_groups & set(classifier.windows(frame, n).groups)
        # the grouped validation inside the fold is grouped too
        w = classifier.windows(dev, n)
        train, val = classifier.grouped_split(w.y, w.groups, kwargs["validation_fraction"], 1)
        assert not set(w.groups[train]) & set(w.groups[val])
        seen.append(sorted({g[-1] for g in set(classifier.windows(evals["heldout"], n).groups)}))
        return real(dev, evals, n, *args, **kwargs)

    monkeypatch.setattr(classifier_training, "evaluate_protocol", spy)
    settings = {
        "models": ["majority", "random_forest"],
        "seed": 1,
        "grids": {"random_forest": {"n_estimators": [20]}},
        "validation_fraction": 0.25,
        "random_validation_fraction": 0.2,
        "balance_classes": True,
    }
    result = attack_classifier.cross_validate(minutes, 2, settings, ["kb", "vc", "dg", "cm"])
    assert seen == [["1"], ["2"], ["3"]], "each fold holds out one recording of every activity"
    metrics = result.metrics.set_index(["model", "eval_set"])
    assert set(metrics.loc["random_forest"].index) == {
        "validation_grouped",
        "validation_random_windows",
        "heldout",
        "heldout_10cm",
        "heldout_50cm",
    }
    held = metrics.loc[("random_forest", "heldout")]
    assert held.n_windows == len(classifier.windows(minutes, 2).y) and held.folds == 3
    assert held.macro_accuracy > 0.9, "four well-separated profiles"
    assert held.ci_low <= held.macro_accuracy <= held.ci_high
    assert metrics.loc[("random_forest", "validation_grouped")][["ci_low", "ci_high"]].isna().all()
    assert metrics.loc[("majority", "heldout")].macro_accuracy == pytest.approx(0.25)
    assert set(result.folds.fold) == {1, 2, 3}
    with pytest.raises(ValueError, match="at least 3"):
        attack_classifier.cross_validate(minutes[minutes.recording_number < 3], 2, settings)


def test_pooled_scores_are_the_scores_of_the_pooled_predictions() -> None:
    rng = np.random.default_rng(3)
    labels = ["a", "b", "c"]
    folds = [(rng.choice(labels, 40), rng.choice(labels, 40)) for _ in range(3)]
    rows = []
    for y_true, y_pred in folds:
        rows += classifier_training.confusion_rows(y_true, y_pred, labels)
    y_true = np.concatenate([t for t, _ in folds])
    y_pred = np.concatenate([p for _, p in folds])
    accuracy, precision, n = attack_classifier.pooled_scores(pd.DataFrame(rows))
    assert accuracy == pytest.approx(classifier_training.macro_accuracy(y_true, y_pred))
    assert precision == pytest.approx(classifier_training.macro_precision(y_true, y_pred))
    assert n == 120


def test_the_interval_resamples_recordings_within_each_activity() -> None:
    # Two activities, three recordings (folds) each, 10 windows per recording; every window of
    # b's third recording is taken for a: pooled macro accuracy (1 + 2/3) / 2.
    rows = []
    for fold in (1, 2, 3):
        rows.append({"fold": fold, "true_activity": "a", "predicted_activity": "a", "count": 10})
        wrong = fold == 3
        rows.append(
            {"fold": fold, "true_activity": "b", "predicted_activity": "a" if wrong else "b",
             "count": 10}
        )  # fmt: skip
    confusion = pd.DataFrame(rows)
    accuracy, _, _ = attack_classifier.pooled_scores(confusion)
    assert accuracy == pytest.approx(5 / 6)
    # A draw of b's recordings is all the wrong one with probability 1/27 (3.7 %, above the
    # 2.5 % tail: recall 0), all right ones with 8/27: a's recall is 1 in every draw.
    low, high = attack_classifier.recording_interval(confusion, seed=1)
    assert (low, high) == (0.5, 1.0)
    perfect = confusion.assign(predicted_activity=confusion.true_activity)
    assert attack_classifier.recording_interval(perfect, seed=1) == (1.0, 1.0)


def test_values_correlate_gains_with_input_power() -> None:
    table = captured_table()
    minutes = attack_telemetry.minutes_table(table)
    values = attack_telemetry.telemetry_values(table, minutes, [1, 3])
    assert values["all_matched"] and values["intervals_traced"] == len(table)
    assert values["source"] == "testbed-profile"  # from the rows, not typed
    assert values["r_mean_gain_dba"] > 0.9 and values["r_mean_exceeds_r_min"]
    assert values["windows_per_activity_n3"] == {a: 36 for a in ("kb", "vc", "dg", "cm")}
    assert values["recordings_per_activity"] == {a: 3 for a in ("cm", "dg", "kb", "vc")}
    assert values["intervals_muted_page_gaps"] == 0
    assert values["r_min_gain_dba_gapless"] == pytest.approx(values["r_min_gain_dba"])
    # the page heard its own gaps in every first interval: they set its min to 0
    gapped = table.assign(page_gaps=table.interval == 1)
    gapped.loc[gapped.page_gaps, "audio_min_gain"] = 0
    values = attack_telemetry.telemetry_values(gapped, attack_telemetry.minutes_table(gapped), [1])
    assert values["intervals_muted_page_gaps"] == (table.interval == 1).sum()
    assert values["r_min_gain_dba_gapless"] > values["r_min_gain_dba"] + 0.1


def test_learning_curve_sets_captured_beside_reference() -> None:
    metrics = pd.DataFrame(
        [
            {"source": attack.SOURCE, "window": n, "model": m, "eval_set": e, "macro_accuracy": a,
             "macro_precision": a, "n_windows": 10, "ci_low": a - 0.1, "ci_high": a + 0.05}
            for n in (1, 2)
            for m, base in (("majority", 0.25), ("random_forest", 0.6 + 0.1 * n))
            for e, a in (("validation_grouped", base), ("heldout", base - 0.05))
        ]
    )  # fmt: skip
    folds = metrics.assign(fold=1)
    reference = pd.DataFrame(
        [
            {"source": "reference", "window": 3, "model": "logistic", "eval_set": e,
             "macro_accuracy": 0.7, "macro_precision": 0.7, "n_windows": 100}
            for e in ("validation_grouped", "eval1", "eval2")
        ]
    )  # fmt: skip
    curve = attack_classifier.learning_curve(metrics, folds, 2.0, "synthetic", 0.25, reference)
    captured = curve[curve.source == attack.SOURCE]
    assert captured.model.tolist() == ["random_forest", "random_forest"]
    assert captured.seconds_observed.tolist() == [2.0, 4.0]
    assert captured.macro_accuracy.tolist() == pytest.approx([0.65, 0.75])
    assert captured.ci_low.tolist() == pytest.approx([0.55, 0.65])
    ref = curve[curve.source == "reference"]
    assert ref.eval_set.tolist() == ["eval1", "eval2"] and (ref.minutes_observed == 3).all()
    assert (ref.stimulus_source == attack_classifier.REFERENCE_STIMULUS_SOURCE).all()
    assert (curve.chance == 0.25).all()


def test_values_beside_the_reference_name_each_keys_source() -> None:
    captured = {"source": "testbed-profile", "r_mean_gain_dba": 0.9, "macro_accuracy": 0.5}
    values = attack_classifier.with_sources(
        captured, {"reference_eval1_accuracy_n3": (0.7, "reference")}
    )
    assert values["source"] == "reference, testbed-profile"
    assert values["source_of"] == {
        "r_mean_gain_dba": "testbed-profile",
        "macro_accuracy": "testbed-profile",
        "reference_eval1_accuracy_n3": "reference",
    }
    assert attack_classifier.with_sources(captured, {})["source"] == "testbed-profile"


# --- the workflow ---------------------------------------------------------------------------


@pytest.mark.workflow
def test_full_config_plans_the_attack(repo_root: Path) -> None:
    """config/full.yaml (not run): its attack's sessions and windows, from a dry run."""
    command = [sys.executable, "-m", "snakemake", "-s", str(repo_root / "Snakefile")]
    command += ["-d", str(repo_root), "--configfile", "config/full.yaml", "-n", "attack"]
    run = subprocess.run(command, capture_output=True, text=True, check=False, cwd=repo_root)
    assert run.returncode == 0, run.stderr[-3000:]
    from snakemake.utils import update_config

    config = load_yaml(repo_root / "config.yaml")
    update_config(config, load_yaml(repo_root / "config/full.yaml"))
    config = validate_config(config, SCHEMA)
    sessions = attack.attack_sessions(config)
    a = config["attack"]
    assert len(sessions) == len(a["activities"]) * a["recordings"] * len(a["distances_cm"])
    assert attack.interval_seconds(config) == 60
    assert "attack_window" in run.stdout + run.stderr


# --- real attack sessions (testbed) -----------------------------------------------------------


@pytest.fixture(scope="module")
def near_and_far(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One vacuum recording at 100 cm and at 10 cm, through the attack's own app config
    (its all-muted schedule, shortened to 10 s: four 2-s records)."""
    config = validate_config(load_yaml(repo_root / "config.yaml"), SCHEMA)
    sessions = copy.deepcopy(config["sessions"])
    sessions["apps"]["attack-webex"]["schedule"] = [{"state": "muted", "seconds": 10}]
    folder = tmp_path_factory.mktemp("attack")
    out: dict = {"sessions": {}}
    for distance in (100, 10):
        name = f"vc1d{distance}"
        spec = {**config["sessions"]["stimuli"]["vc1d25"], "distance_cm": distance}
        wav = folder / f"{name}.wav"
        make_stimulus(spec, wav)
        session = folder / name / "rep1"
        manifest = run_session(
            SessionSpec.from_config(sessions, "attack-webex", "app", name, 1, wav), session
        )
        assert manifest["status"] == "ok", manifest["failure"]
        extract.extract_session(session, folder / f"{name}.parquet", folder / f"{name}-r.parquet")
        ts.write_session(
            session, folder / f"{name}.parquet", folder / f"{name}.csv", folder / f"{name}.json"
        )
        out[distance] = attack_telemetry.session_rows(
            session, folder / f"{name}.csv", wav, spec, ACTIVITIES
        )
        out["sessions"][distance] = (session, folder / f"{name}.parquet", spec)
    return out


@pytest.mark.testbed
def test_attack_session_gains_match_the_collector_and_the_fed_samples(near_and_far) -> None:
    for distance in (100, 10):
        table = near_and_far[distance]
        assert len(table) >= 2, f"{distance} cm: records while muted"
        assert table.matched.all() and (table.state == "muted").all()
        assert table.frame.notna().all() and table.collector_line.notna().all()
        assert (table.source == "testbed-profile").all()
        assert (table.stimulus_source == "synthetic").all()
        assert (table.input_seconds > 1.9).all(), "the microphone was fed throughout"
        # the gain model on the samples fed explains what the page posted
        # max and min are single blocks: the tens of ms between a tick's write and the page's
        # hearing it can move an extreme block across an interval edge (seen: 3); the mean
        # of a hundred blocks hardly moves.
        for column, tolerance in (("max", 3), ("mean", 2)):
            error = (table[f"audio_{column}_gain"] - table[f"model_{column}_gain"]).abs()
            assert error.max() <= tolerance, (distance, column)
        # The min also, except where the page heard gaps the samples fed do not hold (its
        # audio graph's own digital silence, mostly just after join: a gapped frame's gain is
        # ~0 where the samples give ~60); then the page must have counted them.
        assert table.page_gap_frames.notna().all() and table.page_gaps.notna().all()
        assert (table.model_gap_frames == 0).all(), "the activity stimuli hold no gaps"
        error = (table.audio_min_gain - table.model_min_gain).abs()
        unexplained = table[(error > 3) & ~table.page_gaps.astype(bool)]
        assert unexplained.empty, unexplained[["interval", "audio_min_gain", "model_min_gain"]]


@pytest.mark.testbed
def test_attack_gains_rise_with_the_attenuation_removed(near_and_far) -> None:
    near, far = near_and_far[10], near_and_far[100]
    assert near.input_dbfs.mean() - far.input_dbfs.mean() == pytest.approx(20, abs=1)
    rise = near.audio_mean_gain.mean() - far.audio_mean_gain.mean()
    assert 17 <= rise <= 21, f"mean gain rose by {rise:.1f} for 20 dB"
    # the min of an interval the page heard gaps in describes the gap (see above)
    near_min = near.audio_min_gain[~near.page_gaps.astype(bool)]
    assert len(near_min) >= 1, "every interval at 10 cm had gaps"
    assert near_min.min() > far.audio_max_gain.max(), "no overlap at all"


@pytest.mark.testbed
def test_leakage_windows_of_real_sessions(near_and_far, tmp_path: Path) -> None:
    """The leakage test's windows of the two captured sessions: cut inside muted time, labelled
    with what was played, one group for one recording at both distances; one recording is not
    enough to test, and the table says so rather than inventing an accuracy."""
    dirs, packets, specs = zip(*near_and_far["sessions"].values(), strict=True)
    outputs = {"windows": tmp_path / "windows.csv", "table": tmp_path / "leakage.csv"}
    table = leakage.leakage_to_files(
        dirs, packets, specs, 2.0, seed=1, bootstrap=100, permutations=19, outputs=outputs
    )
    windows = pd.read_csv(outputs["windows"])
    per_session = windows.groupby("distance_cm").size()
    assert per_session.between(4, 5).all(), "10 s muted -> four or five whole 2-s windows"
    assert set(windows.group) == {"vc1"} and set(windows.distance_cm) == {10, 100}
    assert (windows.packets > 0).all(), "the profile's telemetry posts go on while muted"
    assert list(table.app) == ["attack-webex"] and list(table.mute_mode) == ["app"]
    assert table.verdict.iloc[0] == "not enough recordings or activities to test"
    assert table.accuracy.isna().all()
    assert pd.read_csv(outputs["table"]).columns.tolist() == leakage.LEAKAGE_COLUMNS
