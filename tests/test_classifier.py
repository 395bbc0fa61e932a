"""The background-activity classifier: parsing, windows, splits, metrics, protocol, summaries."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from reallymuted.analysis import classifier as c
from reallymuted.analysis import classifier_mlp as m
from reallymuted.analysis import classifier_summaries as s
from reallymuted.analysis import classifier_training as t
from reallymuted.config import load_yaml
from reallymuted.io import DataError

GAINS_DIR = "BgActivityClassifier/ParseSourceData"
# Header lines per released file, counted with `grep -c wav` (every header names a .wav).
HEADERS = {
    "new_data_10cm": 27,
    "new_data_25cm": 14,
    "new_data_50cm": 18,
    "old_data_10cm": 19,
    "old_data_25cm": 8,
    "old_data_50cm": 10,
    "old_data_100cm": 9,
}
EXCLUDED_VIDEOS = {"punk_music", "punk_music2", "punk_music3", "key_board3"}


@pytest.fixture(scope="module")
def settings(repo_root: Path) -> dict:
    return load_yaml(repo_root / "config.yaml")["classifier"]


@pytest.fixture(scope="module")
def classes(settings: dict) -> list[c.ActivityClass]:
    return c.class_specs(settings["classes"])


@pytest.fixture(scope="module")
def parsed(reference_dir: Path, settings: dict, classes) -> c.ParsedGains:
    files = {
        split: [reference_dir / GAINS_DIR / f"{name}.txt" for name in names]
        for split, names in settings["splits"].items()
    }
    return c.read_gains(files, classes)


def _minutes(recordings: dict[str, tuple[str, list[int]]]) -> pd.DataFrame:
    """A per-minute table from ``{recording_id: (activity, gains)}``; max = gain, mean =
    gain - 1, min = gain - 2, so every value says which recording and minute it came from."""
    rows = []
    for rid, (activity, gains) in recordings.items():
        for minute, gain in enumerate(gains):
            rows.append(
                {
                    "source": "test",
                    "split": "dev",
                    "file": "f",
                    "distance_cm": 10,
                    "recording_id": rid,
                    "video": activity,
                    "activity": activity,
                    "minute": minute,
                    "max": gain,
                    "mean": gain - 1,
                    "min": gain - 2,
                }
            )
    return pd.DataFrame(rows)


# -- parsing ---------------------------------------------------------------------------------


def test_released_files_parse_to_one_recording_per_header(parsed):
    per_file = parsed.recordings.groupby("file").size().to_dict()
    assert per_file == HEADERS
    assert parsed.recordings.recording_id.is_unique


def test_excluded_names_and_counts_match_the_authors_mapping(parsed):
    recs = parsed.recordings
    excluded = recs[recs.status == "excluded"]
    assert set(excluded.video) == EXCLUDED_VIDEOS
    assert excluded.groupby("split").size().to_dict() == {"dev": 11, "eval1": 5, "eval2": 1}
    assert (recs.status == "empty").sum() == 0  # the release has no empty lists
    assert set(parsed.minutes.activity) == {"cm", "ck", "tk", "dg", "kb", "vc"}
    assert not set(parsed.minutes.video) & EXCLUDED_VIDEOS


def test_minutes_equal_an_independent_count_of_list_values(reference_dir, parsed):
    """Count values of used records with a plain regex, not the parser."""
    expected = {}
    for name in HEADERS:
        text = (reference_dir / GAINS_DIR / f"{name}.txt").read_text()
        total = 0
        for header, maxs in re.findall(r"^(\S+\.wav).*\nMaxs:\[(.*)\]", text, flags=re.M):
            if not any(v in header for v in EXCLUDED_VIDEOS):
                total += len([v for v in maxs.split(",") if v.strip()])
        expected[name] = total
    assert parsed.minutes.groupby("file").size().to_dict() == expected
    assert len(parsed.minutes) == 11085


def test_header_notes_and_distances(parsed):
    recs = parsed.recordings.set_index("recording_id")
    assert recs.loc["new_data_10cm:L67", "note"] == "10 cm"
    assert recs.loc["new_data_10cm:L67", "distance_cm"] == 10
    # the 100 cm file holds one record annotated "50": kept in eval2, as the authors did
    odd = recs[recs.note_distance_cm.notna() & (recs.note_distance_cm != recs.distance_cm)]
    assert list(odd.index) == ["old_data_100cm:L42"]
    assert odd.split.iloc[0] == "eval2"


def test_label_mapping_is_first_match_by_substring(classes):
    assert c.label_for("cooking_11-22", classes) == "ck"
    assert c.label_for("eating", classes) == "ck"
    assert c.label_for("vaccume", classes) == "vc"
    assert c.label_for("cleaning3", classes) == "vc"
    assert c.label_for("key_board3", classes) is None
    assert c.label_for("punk_music2", classes) is None


def test_tiny_file_counts(test_data, classes):
    path = test_data / "classifier" / "tiny_10cm.txt"
    records = c.parse_gains_file(path)
    assert [(r.video, r.line, len(r.max)) for r in records] == [
        ("classical_music", 1, 5),
        ("key_board3", 6, 4),
        ("cooking2", 11, 0),
        ("keyboard4", 16, 6),
        ("keyboard4", 20, 3),
        ("punk_music2", 26, 2),
    ]
    parsed = c.read_gains({"dev": [path]}, classes, source="test")
    status = parsed.recordings.set_index("line").status.to_dict()
    assert status == {1: "used", 6: "excluded", 11: "empty", 16: "used", 20: "used", 26: "excluded"}
    assert len(parsed.minutes) == 5 + 6 + 3
    assert parsed.minutes.recording_id.nunique() == 3
    assert (parsed.minutes.source == "test").all()
    assert list(parsed.minutes.columns) == c.MINUTE_COLUMNS


@pytest.mark.parametrize(
    ("name", "line", "words"),
    [
        ("truncated_10cm.txt", 7, "ends before the Means line"),
        ("unclosed_10cm.txt", 4, "not closed"),
        ("bad_value_10cm.txt", 3, "'3x1'"),
        ("uneven_10cm.txt", 1, "different lengths"),
    ],
)
def test_broken_files_raise_dataerror_naming_file_and_line(test_data, name, line, words):
    path = test_data / "classifier" / name
    with pytest.raises(DataError, match=re.escape(f"{name}:{line}:")) as err:
        c.parse_gains_file(path)
    assert words in str(err.value)


def test_cut_copy_of_a_released_file_raises(reference_dir, tmp_path):
    lines = (reference_dir / GAINS_DIR / "new_data_25cm.txt").read_text().splitlines()
    cut = tmp_path / "new_data_25cm.txt"
    cut.write_text("\n".join(lines[:8]) + "\n")  # second record loses its Mins line
    with pytest.raises(DataError, match=r"new_data_25cm\.txt:8: .*Mins line"):
        c.parse_gains_file(cut)


# -- windows and splits ----------------------------------------------------------------------


def test_windows_never_cross_recordings():
    minutes = _minutes({"A": ("cm", [10, 11, 12, 13, 14]), "B": ("kb", [50, 51, 52])})
    X, y, groups = c.windows(minutes, 3)
    assert X.shape == (3 + 1, 9)
    assert list(groups) == ["A", "A", "A", "B"]
    assert list(y) == ["cm", "cm", "cm", "kb"]
    # features: max_1..max_n, mean_1..mean_n, min_1..min_n
    assert X[0].tolist() == [10, 11, 12, 9, 10, 11, 8, 9, 10]
    assert X[3].tolist() == [50, 51, 52, 49, 50, 51, 48, 49, 50]
    for row, group in zip(X, groups, strict=True):
        maxima = row[:3]
        assert (maxima >= 50).all() if group == "B" else (maxima < 50).all()
    _, _, groups4 = c.windows(minutes, 4)  # B is shorter than n: no sample
    assert list(groups4) == ["A", "A"]


def test_window_counts_on_released_data(parsed):
    lengths = parsed.minutes.groupby("recording_id").size()
    for n in (3, 10):
        _, _, groups = c.windows(parsed.minutes, n)
        assert len(groups) == int((lengths - n + 1).clip(lower=0).sum())


def test_grouped_split_keeps_recordings_on_one_side(parsed, settings):
    dev = parsed.minutes[parsed.minutes.split == "dev"]
    _, y, groups = c.windows(dev, 5)
    train, val = c.grouped_split(y, groups, settings["validation_fraction"], settings["seed"])
    assert not set(groups[train]) & set(groups[val])
    assert len(train) + len(val) == len(y)
    assert set(y[train]) == set(y[val]) == set(y)  # every class trained and validated
    share = len(set(groups[val])) / len(set(groups))
    assert 0.15 < share < 0.35


def test_random_window_split_leaks_recordings(parsed, settings):
    """The authors' split puts windows of the same recording on both sides."""
    dev = parsed.minutes[parsed.minutes.split == "dev"]
    _, y, groups = c.windows(dev, 7)
    train, val = t.random_window_split(y, 0.2, settings["seed"])
    shared = np.isin(groups[val], list(set(groups[train])))
    assert shared.mean() > 0.9


# -- metrics ---------------------------------------------------------------------------------


def test_macro_metrics_on_a_hand_example():
    y_true = ["a", "a", "a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "a", "b", "b", "a", "a"]
    # recall a 3/4, b 1/2, c 0 -> 5/12; precision a 3/5, b 1/2, c 0 (never predicted) -> 11/30
    assert t.macro_accuracy(y_true, y_pred) == pytest.approx(5 / 12)
    assert t.macro_accuracy(y_true, y_pred) == pytest.approx(
        balanced_accuracy_score(y_true, y_pred)
    )
    assert t.macro_precision(y_true, y_pred) == pytest.approx(11 / 30)
    assert np.mean(np.array(y_true) == np.array(y_pred)) == pytest.approx(4 / 7)  # not macro


def test_confusion_rows_are_row_normalised():
    rows = pd.DataFrame(
        t.confusion_rows(np.array(["a", "a", "b"]), np.array(["a", "b", "b"]), ["a", "b", "c"])
    )
    assert set(rows.true_activity) == {"a", "b"}  # no row for a class absent from y_true
    assert rows.groupby("true_activity").share.sum().tolist() == pytest.approx([1.0, 1.0])


# -- protocol --------------------------------------------------------------------------------

SMALL_GRIDS = {"random_forest": {"n_estimators": [20], "min_samples_leaf": [1, 5]}}


def _run(parsed, settings, models):
    m = parsed.minutes
    return t.evaluate_protocol(
        m[m.split == "dev"],
        {"eval1": m[m.split == "eval1"], "eval2": m[m.split == "eval2"]},
        3,
        models,
        settings["seed"],
        grids=SMALL_GRIDS,
        labels=[x["code"] for x in settings["classes"]],
    )


def test_protocol_is_deterministic_and_majority_is_chance(parsed, settings):
    first = _run(parsed, settings, ["majority", "random_forest"])
    second = _run(parsed, settings, ["majority", "random_forest"])
    pd.testing.assert_frame_equal(first.metrics, second.metrics)
    pd.testing.assert_frame_equal(first.confusion, second.confusion)
    pd.testing.assert_frame_equal(first.grid, second.grid)

    metrics = first.metrics.set_index(["model", "eval_set"])
    assert set(first.metrics.eval_set) == set(c.EVAL_SETS)
    for eval_set in c.EVAL_SETS:
        assert metrics.loc[("majority", eval_set), "macro_accuracy"] == pytest.approx(1 / 6)
        assert metrics.loc[("random_forest", eval_set), "macro_accuracy"] > 0.4
    # the leak: the random window split scores far above the recording-grouped one
    rf = metrics.loc["random_forest"].macro_accuracy
    assert rf["validation_random_windows"] > rf["validation_grouped"] + 0.1
    assert first.grid.groupby("model").selected.sum().to_dict() == {
        "majority": 1,
        "random_forest": 1,
    }
    assert first.metrics.set_index("eval_set").n_windows["eval1"].iloc[0] == 4818


# -- summaries -------------------------------------------------------------------------------


def _metrics(rows):
    return pd.DataFrame(
        [
            {
                "source": "reference",
                "window": w,
                "model": m,
                "eval_set": "validation_grouped",
                "macro_accuracy": a,
                "macro_precision": a,
                "n_windows": 10,
            }
            for w, m, a in rows
        ]
    )


@pytest.mark.parametrize(
    ("hidden", "alpha"), [([16], 0.0001), ([64, 64], 0.0001), ([32, 16, 8], 0.01)]
)
def test_mlp_fit_with_numpy_batches_is_scikit_learns_fit_bit_for_bit(
    parsed, settings, hidden, alpha
):
    """fit_model takes the MLP's mini-batches by NumPy indexing, its products by ``@``, its
    ReLU derivative by a multiplication, its loss without checks, its backward pass written
    out and Adam's steps over one flat array of all parameters (faster); the weights must be
    exactly those of scikit-learn's own fit, and scikit-learn's functions are put back."""
    w = c.windows(parsed.minutes[parsed.minutes.split == "dev"], 3)
    X, y = w.X[:600], w.y[:600]
    params = {"hidden_layer_sizes": hidden, "max_iter": 30, "alpha": alpha}
    ours = t.fit_model("mlp", params, settings["seed"], X, y)
    theirs = t.make_model("mlp", params, settings["seed"])
    weight = t.compute_sample_weight("balanced", y)
    with pytest.warns(t.ConvergenceWarning):
        theirs.fit(X, y, model__sample_weight=weight)
    assert m.mlp_module._safe_indexing.__module__ == "sklearn.utils._indexing"
    assert m.mlp_module.safe_sparse_dot.__module__ == "sklearn.utils.extmath"
    assert m.mlp_module.DERIVATIVES["relu"].__module__ == "sklearn.neural_network._base"
    assert "update_params" not in m.mlp_module.AdamOptimizer.__dict__
    assert m.mlp_module.shuffle.__module__ == "sklearn.utils._indexing"
    backprop = m.mlp_module.BaseMultilayerPerceptron.__dict__["_backprop"]
    assert backprop.__module__ == "sklearn.neural_network._multilayer_perceptron"
    ours, theirs = ours.named_steps["model"], theirs.named_steps["model"]
    flat = ours.coefs_[0].base  # the written-out pass ran: the parameters share one buffer
    assert flat is not None and all(a.base is flat for a in ours.coefs_ + ours.intercepts_)
    assert all(m.base is ours._optimizer.ms[0].base for m in ours._optimizer.ms)
    assert ours.n_iter_ == theirs.n_iter_ == 30
    assert ours.loss_curve_ == theirs.loss_curve_
    for a, b in zip(
        ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("special", [None, np.inf, np.nan])
def test_relu_derivative_in_the_fit_writes_the_same_bits(special):
    """Where the unit is off, the delta becomes +0 exactly as ``delta[Z == 0] = 0`` makes it
    (not the -0 of a negative number times 0); a non-finite delta takes scikit-learn's way."""
    rng = np.random.default_rng(7)
    Z = np.maximum(rng.normal(size=(50, 8)), 0.0)
    Z[0, :4] = -0.0
    delta = rng.normal(size=(50, 8))
    delta[1, 1] = -0.0
    if special is not None:
        delta[2, 2] = special
    theirs = delta.copy()
    m.mlp_module.DERIVATIVES["relu"](Z, theirs)
    ours = delta.copy()
    with m.mlp_batches_by_numpy_indexing():
        m.mlp_module.DERIVATIVES["relu"](Z, ours)
    np.testing.assert_array_equal(ours.view(np.int64), theirs.view(np.int64))


def test_weighted_log_loss_in_the_fit_is_scikit_learns_bit_for_bit():
    """The batch loss (which decides when the MLP stops) is np.average's arithmetic."""
    rng = np.random.default_rng(3)
    for n, k in [(200, 6), (107, 6), (50, 3)]:
        prob = rng.dirichlet(np.ones(k), size=n)
        prob[0, 0], prob[1, 1] = 0.0, 1.0  # clipped
        y = np.eye(k, dtype=bool)[rng.integers(0, k, n)]
        weight = rng.uniform(0.2, 3, size=3 * n)[::3]  # a strided view, as batches may be
        theirs = m.mlp_module.LOSS_FUNCTIONS["log_loss"](y, prob, weight)
        with m.mlp_batches_by_numpy_indexing():
            ours = m.mlp_module.LOSS_FUNCTIONS["log_loss"](y, prob, weight)
        assert np.float64(ours).tobytes() == np.float64(theirs).tobytes()
    assert m.mlp_module.LOSS_FUNCTIONS["log_loss"].__module__ == "sklearn.neural_network._base"


def test_model_selection_ties_go_to_the_simpler_model():
    metrics = _metrics(
        [(3, "mlp", 0.8), (3, "random_forest", 0.8), (3, "majority", 0.2), (5, "mlp", 0.9)]
    )
    chosen = s.select_models(metrics).set_index("window").model.to_dict()
    assert chosen == {3: "random_forest", 5: "mlp"}


def test_hardest_class_and_its_confusion():
    rows = []
    for eval_set, ck_as_kb in (("eval1", 0.7), ("eval2", 0.5)):
        for true, shares in {
            "ck": {"ck": 1 - ck_as_kb, "kb": ck_as_kb, "cm": 0.0},
            "kb": {"ck": 0.1, "kb": 0.9, "cm": 0.0},
            "cm": {"ck": 0.0, "kb": 0.2, "cm": 0.8},
        }.items():
            rows += [
                {
                    "window": 7,
                    "model": "mlp",
                    "eval_set": eval_set,
                    "true_activity": true,
                    "predicted_activity": p,
                    "share": s,
                }
                for p, s in shares.items()
            ]
    assert s.hardest_class(pd.DataFrame(rows), 7, "mlp") == ("ck", "kb")


def test_dataset_sizes_table(parsed, classes):
    table = s.dataset_sizes(parsed.minutes, parsed.recordings, [3, 7], classes)
    rows = table.set_index(["split", "activity"])
    assert rows.loc[("dev", "(excluded)"), "recordings"] == 11
    assert "key_board3 x4" in rows.loc[("dev", "(excluded)"), "note"]
    assert rows.loc[("eval2", "(all classes)"), "recordings"] == 8
    assert rows.loc[("eval1", "(all classes)"), "windows_n3"] == 4818
    per_class = table[~table.activity.str.startswith("(")]
    totals = rows.xs("(all classes)", level="activity")
    assert per_class.groupby("split").minutes.sum().to_dict() == totals.minutes.to_dict()
