"""The attack with and without the OS-level mute: decoded gains while muted per activity, and
every classifier's accuracy against chance, guard off and on (numbers from
reallymuted.analysis.attack_guard)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from reallymuted.analysis.attack_guard import GAINS, GROUPED_TEST, REFERENCE_PROTOCOL, TRAFFIC
from reallymuted.figures import PALETTE, plt, save, source_footer

COLOURS = {"off": PALETTE[3], "on": PALETTE[2]}


def _gain_panel(ax: plt.Axes, telemetry: Mapping[str, pd.DataFrame]) -> None:
    """Per activity and guard: the mean of the records' mean gain (bar) and the highest max
    gain of any record (tick) over the muted, matched intervals."""
    activities = sorted({a for t in telemetry.values() for a in set(t.activity.astype(str))})
    x = np.arange(len(activities))
    for offset, guard in enumerate(("off", "on")):
        table = telemetry.get(guard)
        if table is None:
            continue
        muted = table[table.matched.astype(bool) & (table.state == "muted")]
        by = muted.groupby(muted.activity.astype(str))
        mean = by.audio_mean_gain.mean().reindex(activities)
        peak = by.audio_max_gain.max().reindex(activities)
        xx = x + (offset - 0.5) * 0.38
        ax.bar(xx, mean, width=0.36, color=COLOURS[guard], label=f"guard {guard}: mean gain")
        ax.plot(xx, peak, "_", ms=14, mew=2, color=COLOURS[guard])
        for xi, m, p in zip(xx, mean, peak, strict=True):
            if m == 0 and p == 0:
                ax.text(xi, 1, "0", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, activities)
    ax.set_ylim(0, 100)
    ax.set_xlabel("activity played while muted")
    ax.set_ylabel("decoded gain (0-100)")
    ax.set_title("Telemetry decoded while muted (tick: highest max gain)", fontsize=10)
    ax.legend(loc="upper right", fontsize=8, frameon=False)


def _accuracy_panel(ax: plt.Axes, table: pd.DataFrame) -> None:
    """One row per measure, client and guard: accuracy with its spread, beside chance (grey
    bar: measured by shuffling activities among recordings; tick: its 95th percentile; dotted:
    1/activities where chance was not measured)."""
    rows = table[table.measure.isin([REFERENCE_PROTOCOL, GROUPED_TEST, TRAFFIC])]
    rows = rows.reset_index(drop=True)
    labels = []
    for i, r in rows.iterrows():
        short = r.measure.replace("telemetry classifier ", "telemetry ")
        labels.append(f"{short}\n{r.client}, guard {r.guard} ({r.source})")
        if pd.isna(r.value):
            ax.text(0.02, i, str(r.verdict), va="center", fontsize=8)
            continue
        if r.measure == REFERENCE_PROTOCOL:
            ax.plot([r.chance] * 2, [i - 0.3, i + 0.3], ls=":", color="0.3")
        else:
            ax.barh(i, r.chance, color="0.85", height=0.6)
            ax.plot([r.chance_high] * 2, [i - 0.3, i + 0.3], color="0.55", lw=2)
        ax.errorbar(r.value, i, xerr=[[r.value - r.low], [r.high - r.value]], fmt="o",
                    color=COLOURS[r.guard], capsize=3)  # fmt: skip
        note = str(r.verdict) if pd.isna(r.p_value) else f"{r.verdict} (p = {r.p_value:.2g})"
        if r.measure == REFERENCE_PROTOCOL:
            note = "95 % over recordings; dotted: 1/activities"
        right = np.nanmax([r.high, r.chance_high, r.chance])
        if right < 0.6:  # the note right of everything drawn on its row, else left of it
            ax.text(right + 0.03, i, note, va="center", fontsize=7)
        else:
            ax.text(r.low - 0.02, i, note, ha="right", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy of telling the background activity (muted)")
    ax.set_title("The attack's classifiers, guard off and on", fontsize=10)


def plot_attack_guard(
    table: pd.DataFrame, telemetry: Mapping[str, pd.DataFrame], outputs: list[str | Path]
) -> None:
    """``telemetry``: the decoded telemetry table of each arm, by guard (``off``, ``on``)."""
    accuracy_rows = int(table.measure.isin([REFERENCE_PROTOCOL, GROUPED_TEST, TRAFFIC]).sum())
    fig, (gains, accuracy) = plt.subplots(
        1, 2, figsize=(13, max(4.0, 0.5 * accuracy_rows + 1.6)),
        gridspec_kw={"width_ratios": [1, 1.5]},
    )  # fmt: skip
    _gain_panel(gains, telemetry)
    _accuracy_panel(accuracy, table)
    fig.suptitle("The paper's attack with and without the OS-level mute (reallymuted guard)")
    stimuli = " ".join(sorted(set(table.stimulus_source.astype(str))))
    gain_sources = sorted(set(table[table.measure == GAINS].source))
    model = " (a model of the app, not the app)" if "testbed-profile" in gain_sources else ""
    source_footer(
        fig, table.source, f"telemetry: {', '.join(gain_sources)}{model}; guard on: the client's "
        f"capture streams muted at the session's PulseAudio; stimuli: {stimuli}",
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    save(fig, outputs)
