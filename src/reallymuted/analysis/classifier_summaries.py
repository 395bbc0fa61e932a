"""Summaries of the background-activity classifier's results: the model selected per window,
the Table 3 analogue of dataset sizes and the named values the claims table reads.

Reads tables only (no scikit-learn), like :mod:`reallymuted.analysis.classifier`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reallymuted.analysis.classifier import (
    METRIC_COLUMNS,
    SIMPLICITY,
    ActivityClass,
    class_specs,
    read_minutes,
    read_recordings,
    windows,
)
from reallymuted.io import write_csv, write_json

# -- summaries -------------------------------------------------------------------------------


def select_models(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per source and window, the model with the best ``validation_grouped`` macro accuracy;
    ties go to the simpler model (:data:`SIMPLICITY`). Evaluation sets play no part."""
    val = metrics[metrics.eval_set == "validation_grouped"].copy()
    val["rank"] = val.model.map({m: i for i, m in enumerate(SIMPLICITY)})
    val["score"] = val.macro_accuracy.round(12)
    val = val.sort_values(
        ["source", "window", "score", "rank"], ascending=[True, True, False, True]
    )
    best = val.groupby(["source", "window"], sort=True).head(1)
    return best[["source", "window", "model", "macro_accuracy"]].reset_index(drop=True)


def dataset_sizes(
    minutes: pd.DataFrame,
    recordings: pd.DataFrame,
    window_lengths: Sequence[int],
    classes: Sequence[ActivityClass],
) -> pd.DataFrame:
    """Table 3 analogue: recordings, minutes and windows per n, per activity and split.

    Two extra rows per split say what the authors' label mapping dropped (``(excluded)``,
    with the video names) and which records had empty lists (``(empty lists)``).
    """
    names = {c.code: c.name for c in classes}
    order = {c.code: i for i, c in enumerate(classes)}
    rows = []
    for split, recs in recordings.groupby("split", sort=False):
        used = minutes[minutes.split == split]
        files = " ".join(dict.fromkeys(recs.file))
        base = {"source": recs.source.iloc[0], "split": split, "files": files}
        activities = sorted(set(used.activity), key=lambda a: order.get(a, len(order)))
        for activity in [*activities, "(all classes)"]:
            part = used if activity == "(all classes)" else used[used.activity == activity]
            row = {
                **base,
                "activity": activity,
                "activity_name": names.get(activity, "all six activities"),
                "recordings": part.recording_id.nunique(),
                "minutes": len(part),
            }
            for n in window_lengths:
                row[f"windows_n{n}"] = len(windows(part, n).y)
            rows.append({**row, "note": ""})
        for status, label, why in (
            ("excluded", "(excluded)", "video name matches no class; dropped as by the authors"),
            ("empty", "(empty lists)", "Maxs/Means/Mins lists empty; no minutes"),
        ):
            part = recs[recs.status == status]
            videos = part.video.value_counts().sort_index()
            listing = ", ".join(f"{v} x{k}" for v, k in videos.items())
            rows.append(
                {
                    **base,
                    "activity": label,
                    "activity_name": "",
                    "recordings": len(part),
                    "minutes": int(part.minutes.sum()),
                    **{f"windows_n{n}": None for n in window_lengths},
                    "note": why + (f": {listing}" if listing else ""),
                }
            )
    table = pd.DataFrame(rows)
    for n in window_lengths:
        table[f"windows_n{n}"] = table[f"windows_n{n}"].astype("Int64")
    return table


def claim_values(
    metrics: pd.DataFrame, confusion: pd.DataFrame, recordings: pd.DataFrame
) -> dict[str, Any]:
    """The named numbers the claims table sets beside the paper's C1–C6 (one source)."""
    selected = select_models(metrics).set_index("window").model
    used = recordings[recordings.status == "used"]
    values: dict[str, Any] = {
        "classes": list(dict.fromkeys(confusion.true_activity)),
        "n_classes": int(confusion.true_activity.nunique()),
        # the windows this run evaluated (config classifier.windows): a claim about another
        # window is not measured here, not missing
        "windows": sorted(int(n) for n in selected.index),
        "recordings_used": len(used),
        "recordings_excluded": int((recordings.status == "excluded").sum()),
        "recordings_empty": int((recordings.status == "empty").sum()),
        "recordings_note_distance_differs": int(
            (
                recordings.note_distance_cm.notna()
                & (recordings.note_distance_cm != recordings.distance_cm)
            ).sum()
        ),
    }
    for split in ("dev", "eval1", "eval2"):
        values[f"{split}_recordings"] = int((used.split == split).sum())
    for n, model in selected.items():
        m = metrics[(metrics.window == n) & (metrics.model == model)].set_index("eval_set")
        values[f"selected_model_n{n}"] = model
        values[f"validation_grouped_accuracy_n{n}"] = m.macro_accuracy["validation_grouped"]
        values[f"validation_grouped_precision_n{n}"] = m.macro_precision["validation_grouped"]
        random_split = m.loc["validation_random_windows"]
        values[f"validation_random_accuracy_n{n}"] = random_split.macro_accuracy
        values[f"validation_random_precision_n{n}"] = random_split.macro_precision
        if "weighted_precision" in m.columns:
            values[f"validation_random_weighted_precision_n{n}"] = random_split.weighted_precision
        for eval_set in ("eval1", "eval2"):
            if eval_set in m.index:
                values[f"{eval_set}_accuracy_n{n}"] = m.macro_accuracy[eval_set]
                values[f"{eval_set}_precision_n{n}"] = m.macro_precision[eval_set]
                values[f"{eval_set}_windows_n{n}"] = int(m.n_windows[eval_set])
        if {"eval1", "eval2"} <= set(m.index):
            e = m.loc[["eval1", "eval2"]]
            values[f"eval_weighted_accuracy_n{n}"] = float(
                np.average(e.macro_accuracy, weights=e.n_windows)
            )
            hardest, confused = hardest_class(confusion, n, model)
            values[f"hardest_class_n{n}"] = hardest
            values[f"hardest_class_confused_with_n{n}"] = confused
            for eval_set in ("eval1", "eval2"):
                values[f"{eval_set}_largest_confusion_n{n}"] = largest_confusion(
                    confusion, n, model, eval_set
                )
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}


def largest_confusion(confusion: pd.DataFrame, n: int, model: str, eval_set: str) -> str:
    """The biggest off-diagonal cell of one row-normalised confusion matrix, as text."""
    part = confusion[
        (confusion.window == n)
        & (confusion.model == model)
        & (confusion.eval_set == eval_set)
        & (confusion.true_activity != confusion.predicted_activity)
    ]
    if part.empty:
        return "none"
    top = part.sort_values(["share", "true_activity"], ascending=[False, True], kind="stable").iloc[
        0
    ]
    return f"{top.true_activity} predicted as {top.predicted_activity} in {top.share:.0%}"


def hardest_class(
    confusion: pd.DataFrame, n: int, model: str, eval_sets: Sequence[str] = ("eval1", "eval2")
) -> tuple[str, str]:
    """The activity with the lowest recall averaged over ``eval_sets``, and the activity it is
    most often mistaken for (largest mean off-diagonal share)."""
    part = confusion[
        (confusion.window == n) & (confusion.model == model) & confusion.eval_set.isin(eval_sets)
    ]
    shares = part.groupby(["true_activity", "predicted_activity"], sort=False).share.mean()
    recall = {t: shares[(t, t)] for t in dict.fromkeys(part.true_activity)}
    hardest = min(recall, key=lambda t: (recall[t], t))
    wrong = shares[hardest].drop(hardest)
    return hardest, str(wrong.sort_values(ascending=False, kind="stable").index[0])


# -- entry points for the workflow's scripts -------------------------------------------------


def tables_to_files(
    metrics: Sequence[str | Path],
    confusion: Sequence[str | Path],
    grid: Sequence[str | Path],
    recordings: str | Path,
    out: Mapping[str, str | Path],
) -> None:
    """Rule classifier_tables: per-window results -> the study's tables and named values."""
    all_metrics = pd.concat([pd.read_csv(p) for p in metrics], ignore_index=True)
    all_confusion = pd.concat([pd.read_csv(p) for p in confusion], ignore_index=True)
    all_grid = pd.concat([pd.read_csv(p) for p in grid], ignore_index=True)
    sort = ["source", "window", "model", "eval_set"]
    all_metrics = all_metrics.sort_values(sort, kind="stable")
    all_confusion = all_confusion.sort_values(sort, kind="stable")
    values = claim_values(all_metrics, all_confusion, read_recordings(recordings))
    write_csv(out["metrics"], all_metrics[METRIC_COLUMNS])
    write_csv(out["confusion"], all_confusion)
    write_csv(out["grid"], all_grid)
    write_json(out["values"], {"source": str(all_metrics.source.iloc[0]), **values})


def dataset_sizes_to_file(
    minutes_path: str | Path,
    recordings_path: str | Path,
    window_lengths: Sequence[int],
    config_classes: Iterable[Mapping[str, Any]],
    out: str | Path,
) -> None:
    """Rule classifier_dataset_sizes: the Table 3 analogue."""
    table = dataset_sizes(
        read_minutes(minutes_path),
        read_recordings(recordings_path),
        window_lengths,
        class_specs(config_classes),
    )
    write_csv(out, table)
