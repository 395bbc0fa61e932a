"""Figures 8, 9, 12, 13, 14: the background-activity classifier (plotting only; the numbers
come from reallymuted.analysis.classifier's tables)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from reallymuted.analysis.classifier import distance_from_name
from reallymuted.analysis.classifier_summaries import select_models
from reallymuted.figures import PALETTE, save, source_footer

# The paper's figure number of each window length's confusion matrix.
CONFUSION_FIGURES = {3: 12, 5: 13, 7: 9, 10: 14}
SPLIT_TITLES = {
    "dev": "development set",
    "eval1": "evaluation set 1",
    "eval2": "evaluation set 2",
    # captured telemetry (reallymuted.analysis.attack)
    "heldout": "held-out recordings (pooled over folds)",
}
PROJECTIONS = [("mean", "max"), ("mean", "min"), ("max", "min")]


def _split_title(split: str, splits: Mapping[str, Sequence[str]] | None) -> str:
    """``evaluation set 1 (10/25/50 cm)``: the distances come from the split's file names."""
    title = SPLIT_TITLES.get(split, split)
    distances = [distance_from_name(f) for f in (splits or {}).get(split, [])]
    known = sorted({d for d in distances if d is not None})
    return title + (f" ({'/'.join(map(str, known))} cm)" if known else "")


def plot_gain_space(
    minutes: pd.DataFrame,
    names: Mapping[str, str],
    outputs: list[str | Path],
    splits: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
    unit: str = "minutes",
    title: str | None = None,
    footer: str | None = None,
    point_size: float = 3.0,
) -> None:
    """Figure 8 analogue: every minute as a point in (mean, max, min) gain space, one row per
    split and one 2-D projection per column, coloured by activity.

    Gains are integers, so points are jittered by up to ±0.35 (seeded, hence identical on
    rerun) to show how many minutes share a value; class medians are drawn as large markers.
    Captured telemetry (:mod:`reallymuted.figures.attack`) passes its own ``unit`` (its
    intervals may be shorter than a minute), ``title``, ``footer`` and a larger
    ``point_size`` (it has a hundred points, not thousands); a table with a ``group`` column
    counts its groups as the recordings.
    """
    rng = np.random.default_rng(seed)
    codes = [c for c in names if c in set(minutes.activity)]
    colours = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(codes)}
    split_order = [s for s in SPLIT_TITLES if s in set(minutes.split)]
    split_order += [s for s in dict.fromkeys(minutes.split) if s not in split_order]
    low = minutes[["max", "mean", "min"]].min().min() - 2
    high = minutes[["max", "mean", "min"]].max().max() + 2
    fig, axes = plt.subplots(
        len(split_order),
        len(PROJECTIONS),
        figsize=(11, 3.4 * len(split_order) + 0.8),
        squeeze=False,
    )
    for row, split in zip(axes, split_order, strict=True):
        part = minutes[minutes.split == split]
        for ax, (x, y) in zip(row, PROJECTIONS, strict=True):
            for code in codes:
                pts = part[part.activity == code]
                jx = pts[x].to_numpy(float) + rng.uniform(-0.35, 0.35, len(pts))
                jy = pts[y].to_numpy(float) + rng.uniform(-0.35, 0.35, len(pts))
                ax.scatter(jx, jy, s=point_size, alpha=0.35, color=colours[code], linewidths=0)
                if len(pts):
                    ax.scatter(
                        pts[x].median(),
                        pts[y].median(),
                        s=70,
                        color=colours[code],
                        edgecolors="black",
                        linewidths=0.8,
                        zorder=3,
                    )
            ax.plot([low, high], [low, high], color="0.75", lw=0.6, zorder=0)
            ax.set_xlim(low, high)
            ax.set_ylim(low, high)
            ax.set_ylabel(f"{y} gain")
            if split == split_order[-1]:
                ax.set_xlabel(f"{x} gain")
        recordings = part["group" if "group" in part.columns else "recording_id"].nunique()
        row[0].set_title(
            f"{_split_title(split, splits)}: {len(part):,} {unit}, {recordings} recordings",
            loc="left",
        )
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=colours[c], markersize=8, label=names[c])
        for c in codes
    ]
    fig.suptitle(
        title
        or "Figure 8 analogue: activities in (mean, max, min) gain space "
        "(one point per minute of Webex telemetry; large markers = class medians)"
    )
    fig.tight_layout(rect=(0, 0.02, 1, 0.95))
    fig.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.965),
        ncol=len(codes),
        frameon=False,
    )
    source_footer(fig, minutes.source, footer or "authors' released per-minute gains")
    save(fig, outputs)


def plot_confusion(
    metrics: pd.DataFrame,
    confusion: pd.DataFrame,
    window: int,
    names: Mapping[str, str],
    outputs: list[str | Path],
    splits: Mapping[str, Sequence[str]] | None = None,
    eval_sets: Sequence[str] = ("eval1", "eval2"),
    unit: str = "minutes",
    prefix: str | None = None,
    footer: str | None = None,
) -> None:
    """Figures 9, 12, 13, 14 analogues: row-normalised confusion matrices of the model selected
    for one window length (on grouped validation, never on these sets), evaluation sets side
    by side; each cell prints its share in percent. Captured telemetry passes its own
    ``unit`` of the window, title ``prefix`` and ``footer``."""
    chosen = select_models(metrics[metrics.window == window]).iloc[0]
    model, source = chosen.model, chosen.source
    part = confusion[(confusion.window == window) & (confusion.model == model)]
    scores = metrics[(metrics.window == window) & (metrics.model == model)].set_index("eval_set")
    fig, axes = plt.subplots(1, len(eval_sets), figsize=(6.2 * len(eval_sets), 5.6), squeeze=False)
    for ax, eval_set in zip(axes[0], eval_sets, strict=True):
        cells = part[part.eval_set == eval_set]
        labels = [c for c in names if c in set(cells.predicted_activity)]
        rows = [c for c in labels if c in set(cells.true_activity)]
        matrix = (
            cells.pivot(index="true_activity", columns="predicted_activity", values="share")
            .reindex(index=rows, columns=labels)
            .to_numpy(float)
        )
        ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                share = matrix[i, j]
                ax.text(
                    j,
                    i,
                    f"{100 * share:.0f}",
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white" if share > 0.55 else "black",
                )
        ax.set_xticks(range(len(labels)), [names[c] for c in labels], rotation=35, ha="right")
        ax.set_yticks(range(len(rows)), [names[c] for c in rows])
        ax.set_xlabel("predicted activity")
        ax.set_ylabel("true activity")
        ax.spines[:].set_visible(False)
        s = scores.loc[eval_set]
        ax.set_title(
            f"{_split_title(eval_set, splits)}\nmacro accuracy {100 * s.macro_accuracy:.1f} %, "
            f"macro precision {100 * s.macro_precision:.1f} %, {int(s.n_windows):,} windows",
            fontsize=10,
        )
    number = CONFUSION_FIGURES.get(window)
    if prefix is None:
        prefix = f"Figure {number} analogue: " if number else ""
    title = (
        f"{prefix}confusion matrices (% of each true activity), model {model}, "
        f"n = {window} {unit}, source {source}"
    )
    fig.suptitle(textwrap.fill(title, width=round(16 * 6.2 * len(eval_sets))))
    fig.tight_layout()
    source_footer(
        fig,
        scores.loc[list(eval_sets)].source,
        footer
        or "trained on the development set only; model chosen on a recording-grouped "
        "validation split",
    )
    save(fig, outputs)


def plot_gain_space_figure(
    minutes_path: str | Path,
    config_classes: Sequence[Mapping[str, str]],
    splits: Mapping[str, Sequence[str]],
    seed: int,
    outputs: list[str | Path],
) -> None:
    """Rule classifier_gain_space: Figure 8 from the per-minute table."""
    from reallymuted.analysis.classifier import read_minutes

    names = {c["code"]: c["name"] for c in config_classes}
    plot_gain_space(read_minutes(minutes_path), names, outputs, splits, seed)


def plot_confusion_figure(
    window: int,
    tables: Mapping[str, str | Path],
    config_classes: Sequence[Mapping[str, str]],
    splits: Mapping[str, Sequence[str]],
    outputs: list[str | Path],
) -> None:
    """Rule classifier_confusion_figure: one of Figures 9, 12, 13, 14 from the tables."""
    names = {c["code"]: c["name"] for c in config_classes}
    plot_confusion(
        pd.read_csv(tables["metrics"]),
        pd.read_csv(tables["confusion"]),
        window,
        names,
        outputs,
        splits,
    )
