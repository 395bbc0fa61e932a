"""Policy against behaviour: per app and source of evidence, the verdict of what its policy says
beside what was measured while muted, one panel per topic."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.patches import Rectangle

from reallymuted.analysis.policy import AUDIO, DATA_SHEET, MEASURED, TOPICS
from reallymuted.figures import PALETTE, save, source_footer

# Columns in the order a reader trusts them least to most: the model first, the apps last.
SOURCE_ORDER = ("testbed-profile", "sdk", "sdk-preview", "reference", "native", "web", "desktop")
COLOURS = {"contradicted": PALETTE[3], "consistent": PALETTE[2], "policy silent": "0.72"}
LABELS = {"testbed-profile": "testbed-profile\n(a model,\nnot the app)"}
# The worst verdict of a cell is drawn (one contradicting session is enough to show).
RANK = ("contradicted", "consistent", "policy silent")


def _cell(rows: pd.DataFrame) -> str:
    verdicts = set(rows.verdict)
    return next((v for v in RANK if v in verdicts), "")


def plot_policy_behaviour(table: pd.DataFrame, outputs: list[str | Path]) -> None:
    """A grid per topic: apps down, sources across; a cell is coloured by its worst verdict
    over the app's statements and that source's sessions, blank where the source did not
    measure the app here. Under the grid, Webex's data sheet beside what was measured.

    Only measured rows are drawn, so the footer names their sources alone."""
    measured = table[table.status == MEASURED]
    apps = list(dict.fromkeys(table.app))
    sources = [s for s in SOURCE_ORDER if s in set(measured.source)] or ["(none measured)"]
    fig, axes = plt.subplots(
        1, len(TOPICS), figsize=(4.2 + 1.6 * len(sources), 0.42 * len(apps) + 3.2), sharey=True
    )
    for ax, topic in zip(axes, TOPICS, strict=True):
        rows = measured[measured.topic == topic]
        for yi, app in enumerate(apps):
            for xi, source in enumerate(sources):
                cell = rows[(rows.app == app) & (rows.source == source)]
                verdict = _cell(cell) if not cell.empty else ""
                if verdict:
                    ax.add_patch(Rectangle((xi, yi), 0.94, 0.9, color=COLOURS[verdict]))
                    ax.text(xi + 0.47, yi + 0.45, verdict, ha="center", va="center", fontsize=7)
        ax.set_xlim(0, len(sources))
        ax.set_ylim(len(apps), 0)
        labels = [LABELS.get(s, s) for s in sources]
        ax.set_xticks([x + 0.47 for x in range(len(sources))], labels, fontsize=8)
        ax.set_yticks([y + 0.45 for y in range(len(apps))], apps)
        ax.set_title(topic, fontsize=10)
        ax.tick_params(length=0)
    axes[0].set_ylabel("app (blank: not measured by that source here)")
    sheet = measured[(measured.topic == AUDIO) & (measured.statement == DATA_SHEET)]
    said = [f'Webex data sheet (quoted by the paper, P2): "{DATA_SHEET}"']
    said += [
        f"  beside ({r.source}, {r.verdict}): {r.measurement}"
        for r in sheet.drop_duplicates(["source", "measurement"]).itertuples()
    ] or ["  no measurement of Webex in this run"]
    wrapped = "\n".join(textwrap.fill(line, 150, subsequent_indent="    ") for line in said)
    fig.text(0.01, 0.02, wrapped, ha="left", va="bottom", fontsize=7)
    fig.suptitle("What each app's policy says, beside what was measured while muted")
    source_footer(
        fig,
        measured.source,
        "testbed-profile: the project's model of the app, not the app; statements and their "
        "origins in policy_behaviour.csv",
    )
    fig.tight_layout(rect=(0, 0.06 + 0.018 * wrapped.count("\n"), 1, 1))
    save(fig, outputs)
