"""The reference classifier on the attack's captured telemetry
(:mod:`reallymuted.analysis.attack`): cross-validated over recordings, one window length at a
time, then the attack's tables, learning curve and named values beside the reference's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reallymuted.analysis import classifier, classifier_summaries
from reallymuted.analysis.attack import SOURCE
from reallymuted.analysis.evidence import source_label
from reallymuted.io import write_csv, write_json

REFERENCE_STIMULUS_SOURCE = "authors-videos"  # the paper's ASMR videos played over the air
HELDOUT = "heldout"
INTERVAL_DRAWS = 2000  # bootstrap draws of the held-out recordings
METRIC_COLUMNS = [*classifier.METRIC_COLUMNS, "ci_low", "ci_high", "stimulus_source", "folds"]
CURVE_COLUMNS = [
    "source",
    "stimulus_source",
    "window",
    "interval_s",
    "seconds_observed",
    "minutes_observed",
    "model",
    "eval_set",
    "macro_accuracy",
    "macro_precision",
    "n_windows",
    "ci_low",
    "ci_high",
    "fold_min",
    "fold_max",
    "chance",
]


@dataclass(frozen=True)
class CrossValidation:
    """Pooled metrics and confusion over the folds, and every fold's own rows."""

    metrics: pd.DataFrame
    confusion: pd.DataFrame
    grid: pd.DataFrame
    folds: pd.DataFrame


def pooled_scores(confusion: pd.DataFrame) -> tuple[float, float, int]:
    """Macro accuracy, macro precision and windows of a confusion table (count column),
    as ``classifier_training.macro_accuracy`` / ``macro_precision`` would give on
    the pooled predictions."""
    counts = confusion.pivot_table(
        index="true_activity", columns="predicted_activity", values="count", aggfunc="sum"
    ).fillna(0)
    labels = sorted(set(counts.index) | set(counts.columns))
    counts = counts.reindex(index=labels, columns=labels, fill_value=0)
    true_totals, predicted_totals = counts.sum(axis=1), counts.sum(axis=0)
    diagonal = pd.Series(np.diag(counts.to_numpy()), index=labels)
    present = true_totals > 0
    accuracy = float((diagonal[present] / true_totals[present]).mean())
    occurring = present | (predicted_totals > 0)
    precision = (diagonal / predicted_totals.where(predicted_totals > 0)).fillna(0.0)
    return accuracy, float(precision[occurring].mean()), int(true_totals.sum())


def recording_interval(
    confusion_folds: pd.DataFrame, seed: int, draws: int = INTERVAL_DRAWS
) -> tuple[float, float]:
    """95 % interval of the pooled held-out macro accuracy over the recordings: each fold
    holds out one recording of every activity, so (activity, fold) is one recording; each
    draw takes, per activity, as many of its recordings as it has, with replacement, and
    scores their pooled predictions. Windows of one recording are not independent, so the
    recordings are what is resampled (as the leakage test's interval does). With three
    recordings per activity the interval is coarse, and it says so by its width."""
    diagonal = confusion_folds.true_activity == confusion_folds.predicted_activity
    per_recording = (
        confusion_folds.assign(correct=confusion_folds["count"].where(diagonal, 0))
        .groupby(["true_activity", "fold"])[["correct", "count"]]
        .sum()
    )
    rng = np.random.default_rng(seed)
    recalls = []
    for _activity, part in per_recording.groupby(level="true_activity"):
        correct, total = part["correct"].to_numpy(), part["count"].to_numpy()
        picked = rng.integers(0, len(part), size=(draws, len(part)))
        drawn_total = total[picked].sum(axis=1)
        # a draw of recordings without windows has no recall for that activity
        recall = np.divide(
            correct[picked].sum(axis=1),
            drawn_total,
            out=np.full(draws, np.nan),
            where=drawn_total > 0,
        )
        recalls.append(recall)
    accuracy = np.nanmean(np.vstack(recalls), axis=0)
    low, high = np.nanquantile(accuracy, [0.025, 0.975])
    return float(low), float(high)


def cross_validate(
    minutes: pd.DataFrame,
    n: int,
    settings: Mapping[str, Any],
    labels: Sequence[str] | None = None,
) -> CrossValidation:
    """The reference protocol (:func:`classifier_training.evaluate_protocol`) once per fold,
    holding out recording number k of every activity (``heldout``; also ``heldout_{d}cm`` per
    distance when there are several), training on the other recordings with the reference's
    grouped model selection inside. Held-out predictions are pooled over the folds (their
    confusion counts summed); validation scores are the folds' mean."""
    # scikit-learn is imported here, not by the module: the figures and attack_guard import
    # this module for its names alone
    from reallymuted.analysis import classifier_training

    numbers = sorted(set(minutes.recording_number))
    if len(numbers) < 3:
        raise ValueError(
            f"{len(numbers)} recording(s) per activity: the grouped validation inside each "
            "fold needs at least 3 (attack.recordings)"
        )
    distances = sorted(set(minutes.distance_cm))
    source = str(minutes.source.iloc[0])
    metric_parts, confusion_parts, grid_parts = [], [], []
    for fold in numbers:
        held = minutes[minutes.recording_number == fold]
        evals = {HELDOUT: held}
        if len(distances) > 1:
            evals |= {f"{HELDOUT}_{d}cm": held[held.distance_cm == d] for d in distances}
        result = classifier_training.evaluate_protocol(
            minutes[minutes.recording_number != fold],
            evals,
            n,
            settings["models"],
            settings["seed"],
            **classifier_training.protocol_settings(settings),
            labels=labels,
            source=source,
        )
        metric_parts.append(result.metrics.assign(fold=fold))
        confusion_parts.append(result.confusion.assign(fold=fold))
        grid_parts.append(result.grid.assign(fold=fold))
    folds = pd.concat(metric_parts, ignore_index=True)
    confusion_folds = pd.concat(confusion_parts, ignore_index=True)
    keys = ["source", "window", "model", "eval_set"]
    rows = []
    for key, part in folds.groupby(keys, sort=False):
        row = dict(zip(keys, key, strict=True))
        if str(row["eval_set"]).startswith(HELDOUT):
            cells = confusion_folds[
                (confusion_folds.model == row["model"])
                & (confusion_folds.eval_set == row["eval_set"])
            ]
            accuracy, precision, windows = pooled_scores(cells)
            ci_low, ci_high = recording_interval(cells, settings["seed"])
        else:
            accuracy, precision = part.macro_accuracy.mean(), part.macro_precision.mean()
            windows = int(part.n_windows.sum())
            ci_low = ci_high = np.nan
        rows.append(
            {
                **row,
                "macro_accuracy": accuracy,
                "macro_precision": precision,
                "n_windows": windows,
                "ci_low": ci_low,
                "ci_high": ci_high,
                "folds": len(part),
            }
        )
    pooled = confusion_folds.groupby(
        [*keys, "true_activity", "predicted_activity"], sort=False, as_index=False
    )["count"].sum()
    pooled["share"] = pooled["count"] / pooled.groupby([*keys, "true_activity"], sort=False)[
        "count"
    ].transform("sum")
    return CrossValidation(
        pd.DataFrame(rows),
        pooled,
        pd.concat(grid_parts, ignore_index=True),
        folds,
    )


def window_to_files(
    minutes_path: str | Path,
    n: int,
    settings: Mapping[str, Any],
    out: Mapping[str, str | Path],
    labels: Sequence[str] | None = None,
    threads: int = 1,
) -> None:
    """Rule attack_window: the cross-validated protocol for one window length."""
    from threadpoolctl import threadpool_limits

    minutes = pd.read_csv(minutes_path, dtype={"recording_id": str, "activity": str})
    stimulus_source = " ".join(sorted(set(minutes.stimulus_source)))
    present = [c for c in (labels or []) if c in set(minutes.activity)] or None
    with threadpool_limits(limits=threads):
        result = cross_validate(minutes, n, settings, present)
    write_csv(out["metrics"], result.metrics.assign(stimulus_source=stimulus_source))
    write_csv(out["confusion"], result.confusion.assign(stimulus_source=stimulus_source))
    write_csv(out["grid"], result.grid.assign(stimulus_source=stimulus_source))
    write_csv(out["folds"], result.folds.assign(stimulus_source=stimulus_source))


def learning_curve(
    metrics: pd.DataFrame,
    folds: pd.DataFrame,
    interval_s: float,
    stimulus_source: str,
    chance: float,
    reference: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Macro accuracy against the time observed per sample (n intervals), per window, for
    the model chosen on grouped validation; with the reference's evaluation sets beside it
    (the model it chose per window, evaluation sets 1 and 2, one-minute intervals)."""
    rows = []
    for pick in classifier_summaries.select_models(metrics).itertuples():
        part = metrics[(metrics.window == pick.window) & (metrics.model == pick.model)]
        for r in part[part.eval_set.str.startswith(HELDOUT)].itertuples():
            per_fold = folds[
                (folds.window == pick.window)
                & (folds.model == pick.model)
                & (folds.eval_set == r.eval_set)
            ].macro_accuracy
            rows.append(
                {
                    "source": r.source,
                    "stimulus_source": stimulus_source,
                    "window": int(pick.window),
                    "interval_s": interval_s,
                    "seconds_observed": pick.window * interval_s,
                    "minutes_observed": pick.window * interval_s / 60,
                    "model": pick.model,
                    "eval_set": r.eval_set,
                    "macro_accuracy": r.macro_accuracy,
                    "macro_precision": r.macro_precision,
                    "n_windows": int(r.n_windows),
                    "ci_low": r.ci_low,
                    "ci_high": r.ci_high,
                    "fold_min": per_fold.min(),
                    "fold_max": per_fold.max(),
                    "chance": chance,
                }
            )
    if reference is not None and len(reference):
        for pick in classifier_summaries.select_models(reference).itertuples():
            part = reference[(reference.window == pick.window) & (reference.model == pick.model)]
            for r in part[part.eval_set.isin(["eval1", "eval2"])].itertuples():
                rows.append(
                    {
                        "source": r.source,
                        "stimulus_source": REFERENCE_STIMULUS_SOURCE,
                        "window": int(pick.window),
                        "interval_s": 60.0,
                        "seconds_observed": pick.window * 60.0,
                        "minutes_observed": float(pick.window),
                        "model": pick.model,
                        "eval_set": r.eval_set,
                        "macro_accuracy": r.macro_accuracy,
                        "macro_precision": r.macro_precision,
                        "n_windows": int(r.n_windows),
                        "ci_low": np.nan,
                        "ci_high": np.nan,
                        "fold_min": np.nan,
                        "fold_max": np.nan,
                        "chance": chance,
                    }
                )
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def classifier_values(
    metrics: pd.DataFrame, confusion: pd.DataFrame, curve: pd.DataFrame
) -> dict[str, Any]:
    """Named values of the classifier on captured telemetry (per window and the headline,
    the longest window): the chosen model, its pooled held-out macro accuracy, chance."""
    classes = sorted(set(confusion.true_activity))
    values: dict[str, Any] = {
        "classes": classes,
        "n_classes": len(classes),
        "chance_macro_accuracy": 1 / len(classes) if classes else None,
    }
    held = curve[(curve.source == SOURCE) & (curve.eval_set == HELDOUT)]
    for r in held.itertuples():
        n = r.window
        values[f"selected_model_n{n}"] = r.model
        values[f"macro_accuracy_n{n}"] = r.macro_accuracy
        values[f"macro_precision_n{n}"] = r.macro_precision
        values[f"heldout_windows_n{n}"] = r.n_windows
        values[f"macro_accuracy_fold_range_n{n}"] = [r.fold_min, r.fold_max]
        values[f"macro_accuracy_ci_n{n}"] = [r.ci_low, r.ci_high]
        majority = metrics[
            (metrics.window == n) & (metrics.model == "majority") & (metrics.eval_set == HELDOUT)
        ]
        if len(majority):
            values[f"majority_macro_accuracy_n{n}"] = float(majority.macro_accuracy.iloc[0])
    if len(held):
        top = held.sort_values("window").iloc[-1]
        values |= {
            "headline_window": int(top.window),
            "headline_seconds_observed": float(top.seconds_observed),
            "selected_model": top.model,
            "macro_accuracy": float(top.macro_accuracy),
            "macro_accuracy_ci": [float(top.ci_low), float(top.ci_high)],
            "macro_precision": float(top.macro_precision),
        }
        for r in curve[
            (curve.source == SOURCE) & (curve.window == top.window) & (curve.eval_set != HELDOUT)
        ].itertuples():
            values[f"macro_accuracy_{r.eval_set}"] = r.macro_accuracy
    return values


def with_sources(values: dict[str, Any], beside: Mapping[str, tuple[Any, str]]) -> dict[str, Any]:
    """The captured values with values of other sources beside them (the reference's
    accuracies): the file's ``source`` names every source, ``source_of`` each key's."""
    captured = str(values["source"])
    source_of = {k: captured for k in values if k != "source"}
    merged = dict(values)
    for key, (value, source) in beside.items():
        merged[key], source_of[key] = value, str(source)
    merged["source"] = source_label([*captured.split(", "), *source_of.values()])
    merged["source_of"] = source_of
    return merged


def tables_to_files(
    metrics_paths: Sequence[str | Path],
    confusion_paths: Sequence[str | Path],
    fold_paths: Sequence[str | Path],
    telemetry_values_path: str | Path,
    interval_s: float,
    out: Mapping[str, str | Path],
    reference_metrics: str | Path | None = None,
) -> None:
    """Rule attack_tables: per-window results -> the attack's tables and named values."""
    sort = ["source", "window", "model", "eval_set"]
    metrics = pd.concat([pd.read_csv(p) for p in metrics_paths], ignore_index=True)
    metrics = metrics.sort_values(sort, kind="stable")
    confusion = pd.concat([pd.read_csv(p) for p in confusion_paths], ignore_index=True)
    confusion = confusion.sort_values(sort, kind="stable")
    folds = pd.concat([pd.read_csv(p) for p in fold_paths], ignore_index=True)
    stimulus_source = " ".join(sorted(set(metrics.stimulus_source)))
    reference = pd.read_csv(reference_metrics) if reference_metrics else None
    classes = sorted(set(confusion.true_activity))
    chance = 1 / len(classes) if classes else float("nan")
    curve = learning_curve(metrics, folds, interval_s, stimulus_source, chance, reference)
    values = json.loads(Path(telemetry_values_path).read_text())
    values |= {"interval_s": interval_s, "stimulus_source": stimulus_source}
    values |= classifier_values(metrics, confusion, curve)
    beside = {
        f"reference_{r.eval_set}_accuracy_n{r.window}": (r.macro_accuracy, r.source)
        for r in curve[curve.source == "reference"].itertuples()
    }
    values = with_sources(values, beside)
    write_csv(out["metrics"], metrics[METRIC_COLUMNS])
    write_csv(out["confusion"], confusion)
    write_csv(out["curve"], curve)
    write_json(out["values"], values)
