"""Figures of the study. Plotting only: every function reads a computed table and draws it.

Each figure states its evidence ``source`` (in a footer or title), is saved as PNG (for the
report) and PDF (for print) with fixed metadata so that reruns give identical files. One module
per stage: ``userstudy``, ``classifier``, ``sessions``, ...
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

DPI = 150
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
plt.rcParams.update(
    {
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "svg.hashsalt": "reallymuted",
        "pdf.compression": 6,
    }
)


def save(fig: plt.Figure, outputs: list[str | Path]) -> None:
    """Save to every requested format; metadata fixed so the files do not change on rerun."""
    from reallymuted.io import atomic_path

    for out in outputs:
        suffix = Path(out).suffix.lstrip(".")
        metadata = {"CreationDate": None} if suffix == "pdf" else {"Software": None}
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=suffix, dpi=DPI, bbox_inches="tight", metadata=metadata)
    plt.close(fig)


def source_footer(fig: plt.Figure, text: str) -> None:
    fig.text(0.99, 0.005, text, ha="right", va="bottom", fontsize=7, color="0.4")


def barh_counts(ax: plt.Axes, labels: list[str], counts: list[int], total: int, color: str) -> None:
    y = np.arange(len(labels))
    ax.barh(y, counts, color=color)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    for yi, count in zip(y, counts, strict=True):
        ax.text(count + max(counts) * 0.01, yi, f"{count} ({count / total:.0%})", va="center")
    ax.set_xlim(0, max(counts) * 1.22)
    ax.set_xlabel("respondents")
