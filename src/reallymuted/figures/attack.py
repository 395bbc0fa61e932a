"""Figures of the attack on captured telemetry (plotting only; the numbers come from the tables
and values of reallymuted.analysis.attack_telemetry and attack_classifier): the Figure 7 and
Figure 8 analogues, the confusion matrix and the learning curve beside the reference results."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from reallymuted.analysis.attack import SOURCE
from reallymuted.analysis.attack_classifier import HELDOUT
from reallymuted.figures import PALETTE, save, source_footer
from reallymuted.figures.classifier import plot_confusion, plot_gain_space


def _interval_words(interval_s: float) -> str:
    """``2-s intervals`` / ``minutes``: what one telemetry interval is called in a title."""
    return "minutes" if interval_s == 60 else f"{interval_s:g}-s intervals"


def _footer(stimulus_source: str, interval_s: float, extra: str = "") -> str:
    """What the captured evidence is, in one short line after the footer's sources (the
    caption says the rest)."""
    synthetic = " (procedural, not the paper's videos)" if "synthetic" in stimulus_source else ""
    text = f"{SOURCE} = the webex-2021 profile, not Webex; stimuli: {stimulus_source}"
    return f"{text}{synthetic}; 1 record per {interval_s:g} s" + (f"; {extra}" if extra else "")


def plot_gain_vs_power(
    table: pd.DataFrame, values: Mapping[str, object], outputs: list[str | Path]
) -> None:
    """Figure 7 analogue: decoded mean and min gain of every muted, matched interval against
    the A-weighted level of the samples fed in that interval, with least-squares lines and
    Pearson's r (computed in reallymuted.analysis.attack_telemetry) in the legend."""
    muted = table[table.matched.astype(bool) & (table.state == "muted")]
    muted = muted[np.isfinite(muted.input_dba.astype(float))]
    fig, ax = plt.subplots(figsize=(7.2, 5.0))
    series = [
        ("audio_mean_gain", "mean gain", "o", PALETTE[0], values.get("r_mean_gain_dba")),
        ("audio_min_gain", "min gain", "^", PALETTE[1], values.get("r_min_gain_dba")),
    ]
    x = muted.input_dba.to_numpy(float)
    for column, label, marker, colour, r in series:
        y = muted[column].to_numpy(float)
        ax.scatter(x, y, s=18, marker=marker, color=colour, alpha=0.6, linewidths=0)
        if len(x) >= 2 and np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
            grid = np.linspace(x.min(), x.max(), 2)
            ax.plot(grid, slope * grid + intercept, color=colour, lw=1.4)
        r_text = f"{r:.3f}" if isinstance(r, float) else "n/a"
        ax.plot([], [], marker=marker, color=colour, ls="-", label=f"{label}: Pearson r = {r_text}")
    ax.set_xlabel("input level of the interval, dB(A) re full scale (samples fed to the mic)")
    ax.set_ylabel("decoded gain (0-100)")
    ax.legend(loc="upper left", frameon=False)
    interval_s = float(values.get("interval_s") or muted.interval_s.iloc[0])
    ax.set_title(
        f"Figure 7 analogue: Webex-format telemetry gains vs input power\n"
        f"{len(muted)} muted intervals ({_interval_words(interval_s)}), "
        f"{muted.groupby(['app', 'condition', 'rep']).ngroups} sessions, "
        f"distances {'/'.join(str(d) for d in sorted(set(muted.distance_cm)))} cm",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    stimulus_source = " ".join(sorted(set(muted.stimulus_source))) or "none"
    source_footer(fig, muted.source, _footer(stimulus_source, interval_s))
    save(fig, outputs)


def plot_gain_space_captured(
    minutes: pd.DataFrame,
    names: Mapping[str, str],
    interval_s: float,
    seed: int,
    outputs: list[str | Path],
) -> None:
    """Figure 8 analogue on captured telemetry: one row per distance (the reference figure's
    code, :func:`reallymuted.figures.classifier.plot_gain_space`)."""
    frame = minutes.assign(split=[f"{d} cm" for d in minutes.distance_cm])
    order = sorted(set(frame.distance_cm))
    frame["_order"] = frame.distance_cm.map({d: i for i, d in enumerate(order)})
    frame = frame.sort_values("_order", kind="stable").drop(columns="_order")
    words = _interval_words(interval_s)
    stimulus_source = " ".join(sorted(set(frame.stimulus_source)))
    plot_gain_space(
        frame,
        names,
        outputs,
        seed=seed,
        unit=words,
        title="Figure 8 analogue on captured telemetry: activities in (mean, max, min) gain "
        f"space (one point per {words.rstrip('s')}; large markers = class medians)",
        footer=_footer(stimulus_source, interval_s),
        point_size=14,
    )


def plot_attack_confusion(
    metrics: pd.DataFrame,
    confusion: pd.DataFrame,
    window: int,
    names: Mapping[str, str],
    interval_s: float,
    outputs: list[str | Path],
) -> None:
    """Confusion matrix of the held-out recordings, pooled over the folds, for the model
    chosen on grouped validation (the reference's confusion figure code)."""
    stimulus_source = " ".join(sorted(set(metrics.stimulus_source)))
    plot_confusion(
        metrics,
        confusion,
        window,
        names,
        outputs,
        eval_sets=(HELDOUT,),
        unit=_interval_words(interval_s),
        prefix="Captured telemetry: ",
        footer=_footer(stimulus_source, interval_s),
    )


def plot_learning_curve(curve: pd.DataFrame, outputs: list[str | Path]) -> None:
    """Macro accuracy against the time observed per sample: captured telemetry (held-out
    recordings; band = 95 % bootstrap interval over them) and, beside it, the reference data's
    evaluation sets for the model the reference chose per window; chance as a dotted line."""
    captured = curve[curve.source == SOURCE]
    reference = curve[curve.source != SOURCE]
    panels = [p for p in (captured, reference) if len(p)]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(6.0 * len(panels), 4.6), squeeze=False, sharey=True
    )
    for ax, part in zip(axes[0], panels, strict=True):
        interval_s = float(part.interval_s.iloc[0])
        for i, (eval_set, rows) in enumerate(part.groupby("eval_set", sort=True)):
            rows = rows.sort_values("window")
            colour = PALETTE[i % len(PALETTE)]
            main = eval_set in (HELDOUT, "eval1")
            ax.plot(
                rows.window,
                rows.macro_accuracy,
                marker="o",
                color=colour,
                lw=2.0 if main else 1.2,
                ls="-" if main else "--",
                label=f"{eval_set}",
            )
            if rows.ci_low.notna().any():
                ax.fill_between(
                    rows.window, rows.ci_low, rows.ci_high, color=colour, alpha=0.15, lw=0
                )
            for r in rows.itertuples():
                ax.annotate(
                    r.model, (r.window, r.macro_accuracy), fontsize=6, color="0.35",
                    xytext=(3, -9), textcoords="offset points",
                )  # fmt: skip
        chance = part.chance.dropna()
        if len(chance):
            ax.axhline(chance.iloc[0], color="0.4", ls=":", lw=1, label="chance")
        ax.set_ylim(0, 1.02)
        ax.set_xticks(sorted(set(part.window)))
        ax.set_xlabel(f"n = {_interval_words(interval_s)} observed per sample")
        ax.set_ylabel("macro accuracy (mean per-class recall)")
        stimulus_source = part.stimulus_source.iloc[0]
        ax.set_title(
            f"source {part.source.iloc[0]}, stimuli {stimulus_source}\n"
            + (
                "held-out recordings, cross-validated"
                if part is captured
                else "evaluation sets 1 and 2 (the paper's protocol)"
            ),
            fontsize=10,
        )
        ax.legend(frameon=False, fontsize=8, loc="lower right", bbox_to_anchor=(1, 0.22))
    fig.suptitle("Learning curve: macro accuracy vs time observed, captured beside reference")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    interval = float(captured.interval_s.iloc[0]) if len(captured) else 60.0
    stimulus = captured.stimulus_source.iloc[0] if len(captured) else "none"
    source_footer(
        fig,
        curve.source,
        _footer(stimulus, interval, "reference: the authors' released gains, one per minute"),
    )
    save(fig, outputs)


# --- entry points for the workflow's scripts ---------------------------------------------------


def _names(config_classes: Sequence[Mapping[str, str]]) -> dict[str, str]:
    from reallymuted.analysis.attack import activity_names

    return activity_names(config_classes)


def gain_vs_power_figure(
    table_path: str | Path, values_path: str | Path, outputs: list[str | Path]
) -> None:
    """Rule attack_fig7."""
    table = pd.read_csv(table_path, dtype={"time_epoch": str})
    plot_gain_vs_power(table, json.loads(Path(values_path).read_text()), outputs)


def gain_space_figure(
    minutes_path: str | Path,
    config_classes: Sequence[Mapping[str, str]],
    interval_s: float,
    seed: int,
    outputs: list[str | Path],
) -> None:
    """Rule attack_fig8."""
    minutes = pd.read_csv(minutes_path, dtype={"recording_id": str, "activity": str})
    plot_gain_space_captured(minutes, _names(config_classes), interval_s, seed, outputs)


def confusion_figure(
    metrics_path: str | Path,
    confusion_path: str | Path,
    window: int,
    config_classes: Sequence[Mapping[str, str]],
    interval_s: float,
    outputs: list[str | Path],
) -> None:
    """Rule attack_confusion_figure."""
    plot_attack_confusion(
        pd.read_csv(metrics_path),
        pd.read_csv(confusion_path),
        window,
        _names(config_classes),
        interval_s,
        outputs,
    )


def learning_curve_figure(curve_path: str | Path, outputs: list[str | Path]) -> None:
    """Rule attack_learning_curve_figure."""
    plot_learning_curve(pd.read_csv(curve_path), outputs)


def plot_leakage(table: pd.DataFrame, outputs: list[str | Path]) -> None:
    """Accuracy of telling the activity from muted encrypted traffic, per app and mute mode:
    the point with its 95 % recording-bootstrap interval, beside the measured chance (grey bar:
    mean accuracy with the activities shuffled among recordings; grey tick: its 95th
    percentile) and 1/activities (dotted). Rows the test could not run on are named, not drawn."""
    rows = table.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7.2, 1.6 + 0.55 * max(len(rows), 1)))
    labels = []
    for i, row in rows.iterrows():
        labels.append(f"{row.app}\n{row.mute_mode} ({row.source})")
        if pd.isna(row.accuracy):
            ax.text(0.02, i, str(row.verdict), va="center", fontsize=8)
            continue
        ax.barh(i, row.chance, color="0.85", height=0.6)
        ax.plot([row.chance_high] * 2, [i - 0.3, i + 0.3], color="0.55", lw=2)
        ax.plot([row.uniform_chance] * 2, [i - 0.3, i + 0.3], ls=":", color="0.3")
        ax.errorbar(
            row.accuracy,
            i,
            xerr=[[row.accuracy - row.ci_low], [row.ci_high - row.accuracy]],
            fmt="o",
            color=PALETTE[0] if str(row.verdict).startswith("leaks") else PALETTE[1],
            capsize=3,
        )
        verdict = f"{row.verdict} (p = {row.p_value:.2g})"
        right = max(row.ci_high, row.chance_high, row.uniform_chance)
        ax.text(min(right + 0.03, 0.7), i, verdict, va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy of telling the activity from packet sizes and timing (muted)")
    ax.set_title("Leakage beyond telemetry: muted encrypted traffic vs background activity")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    windows = ", ".join(f"{w:g}" for w in sorted(set(rows.window_s))) if len(rows) else "-"
    stimuli = " ".join(sorted(set(rows.stimulus_source))) if len(rows) else "none"
    source_footer(
        fig,
        rows.source,
        f"grey: chance (labels shuffled among recordings; tick: 95th pct); dotted: 1/activities; "
        f"bars: 95 % bootstrap over recordings; {windows}-s windows; stimuli: {stimuli}",
    )
    save(fig, outputs)
