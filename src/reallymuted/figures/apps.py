"""The ten apps side by side: what each source of evidence shows while muted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from reallymuted.figures import PALETTE, save, source_footer

# The sources a line of the figure may draw: the project's model of the app, and the vendor's
# own published library (the other sources are measured only on hosts the figure names).
DRAWN = ("testbed-profile", "sdk", "sdk-preview")


def _lines(table: pd.DataFrame) -> list[tuple[str, Any]]:
    """(label, measured row or None) per line: each app's model, then each measured run of
    the vendor's own library under it."""
    lines = []
    for _, rows in table.groupby("app", sort=False):
        name = rows.app_name.iloc[0]
        profile = rows[(rows.source == "testbed-profile") & (rows.status == "measured")]
        if profile.empty:
            lines.append((f"{name}\n(model: no profile / not run)", None))
        else:
            row = profile.iloc[0]
            lines.append((f"{name}\n(model: {row.measured_as.split(' ')[1]})", row))
        for row in rows[rows.source.isin(DRAWN[1:]) & (rows.status == "measured")].itertuples():
            package = str(row.client_code).split(";")[0]
            lines.append((f"{name}: {row.source}, mode {row.mute_mode}\n({package})", row))
    return lines


def plot_headline(table: pd.DataFrame, outputs: list[str | Path]) -> None:
    """One line per app's model and per run of the vendor's own library: muted mic reads and
    traffic, and whether audio-derived data left.

    Only ``testbed-profile`` and ``sdk``/``sdk-preview`` rows are drawn; each line's label says
    which it is, unmeasured apps are marked as such, and so are the read shares of profiles that
    cannot model their app's finding (M2, buffer flags only: a Chromium page reads every
    sample). The footer's sources are those of the rows drawn, and it says what became of the
    other sources.
    """
    lines = _lines(table)
    rows = [row for _, row in lines]
    y = np.arange(len(lines))
    fig, (reads, packets, leak) = plt.subplots(
        1,
        3,
        figsize=(13, 0.55 * len(lines) + 1.9),
        sharey=True,
        gridspec_kw={"width_ratios": [1.2, 1, 0.6]},
    )
    height = 0.38

    def get(row: Any, column: str) -> float:
        return float(getattr(row, column)) if row is not None else np.nan

    modelled = [row is None or str(row.reads_modelled) == "yes" for row in rows]
    pairs = list(zip(rows, modelled, strict=True))
    os_share = [get(r, "muted_read_share_os") if m else np.nan for r, m in pairs]
    app_share = [get(r, "muted_read_share_app") if m else np.nan for r, m in pairs]
    reads.barh(y - height / 2, os_share, height, color=PALETTE[0], label="OS witness")
    reads.barh(y + height / 2, app_share, height, color=PALETTE[1], label="app witness")
    reads.set_xlim(0, 1.05)
    reads.set_xlabel("share of real time the mic was read while muted")
    reads.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    reads.set_yticks(y, [label for label, _ in lines], fontsize=7)
    # every line, first at the top, whether or not it has a bar (the axes are shared)
    reads.set_ylim(len(lines) - 0.5, -0.5)
    for tick, row in zip(reads.get_yticklabels(), rows, strict=True):
        if row is not None and row.source != "testbed-profile":
            tick.set_fontweight("bold")  # the vendor's own code

    packets.barh(y, [get(r, "muted_packets_per_s") for r in rows], 0.6, color=PALETTE[2])
    packets.set_xlabel("packets/s sent while muted")

    leak.set_xlim(0, 1)
    leak.set_xticks([])
    leak.set_title("audio-derived data leaving\nwhile muted", fontsize=9)
    for yi, (label, row) in zip(y, lines, strict=True):
        if row is not None:
            verdict = row.audio_derived_data_leaving
            colour = PALETTE[3] if verdict == "yes" else "0.35"
            leak.text(0.05, yi, verdict, va="center", color=colour, fontweight="bold")
        else:
            app_rows = table[table.app_name == label.split("\n")[0]]
            status = app_rows.status.iloc[0] if len(app_rows) else "not run"
            leak.text(0.05, yi, str(status).split(":")[0], va="center", color="0.5", fontsize=8)
    for ax in (reads, packets):
        for yi, row in zip(y, rows, strict=True):
            if row is None:
                _mark(ax, yi, "not measured")
    for yi, row, is_modelled in zip(y, rows, modelled, strict=True):
        if row is not None and not is_modelled:
            why = str(row.reads_modelled).removeprefix("no: ")
            _mark(reads, yi, f"behaviour not modelled\n({why})")
    fig.suptitle(
        "The ten apps: their testbed profiles (models of each app's published mute behaviour, "
        "not the apps) and, in bold, the vendors' own published libraries (not the whole apps)",
        x=0.01,
        ha="left",
        fontsize=10,
    )
    drawn = [row.source for row in rows if row is not None]
    source_footer(fig, drawn, _others(table))
    fig.tight_layout()
    save(fig, outputs)


def _mark(ax: plt.Axes, y: float, text: str) -> None:
    """Grey text where a bar would be: the value is not a measurement of the app."""
    ax.text(0.02, y, text, va="center", fontsize=7, color="0.5", transform=ax.get_yaxis_transform())


def _others(table: pd.DataFrame) -> str:
    """What the footer says beside the drawn rows' sources: models and libraries, not the apps,
    and what became of every other source of the table (not run, or measured but not drawn)."""
    said = ["models and vendor libraries, not the apps"]
    others = table[~table.source.isin(DRAWN)]
    for status, rows in others.groupby(others.status == "measured", sort=False):
        names = ", ".join(sorted(set(rows.source)))
        said.append(f"{names}: {'measured, not drawn' if status else 'not run'}")
    return "; ".join(said) + " (results/tables/apps_headline.csv)"
