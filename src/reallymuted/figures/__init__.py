"""Figures of the study. Plotting only: every function reads a computed table and draws it.

Each figure states its evidence ``source`` in a footer built from the rows it draws
(:func:`source_footer`), never typed; the same statement is kept in the saved files' metadata
(PNG text ``Source``, PDF ``Subject``) so that a check can read it back. Figures are saved as
PNG (for the report) and PDF (for print) with fixed metadata so that reruns give identical
files. One module per stage: ``userstudy``, ``classifier``, ``sessions``, ...
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from reallymuted.analysis.evidence import source_label

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


# The source statement of each figure drawn, for its saved files' metadata.
_SOURCES: weakref.WeakKeyDictionary[plt.Figure, str] = weakref.WeakKeyDictionary()
PNG_SOURCE_KEY = "Source"


def save(fig: plt.Figure, outputs: list[str | Path]) -> None:
    """Save to every requested format; metadata fixed so the files do not change on rerun, and
    holding the figure's source statement."""
    from reallymuted.io import atomic_path

    sources = _SOURCES.get(fig)
    for out in outputs:
        suffix = Path(out).suffix.lstrip(".")
        metadata: dict[str, str | None] = (
            {"CreationDate": None} if suffix == "pdf" else {"Software": None}
        )
        if sources is not None:
            metadata["Subject" if suffix == "pdf" else PNG_SOURCE_KEY] = f"source: {sources}"
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=suffix, dpi=DPI, bbox_inches="tight", metadata=metadata)
    plt.close(fig)


def source_footer(fig: plt.Figure, sources: Iterable[object], detail: str = "") -> str:
    """Write "source: <the sources of the rows drawn>; <detail>" at the foot of the figure.

    ``sources`` is the ``source`` column of the rows the figure draws, so the statement follows
    the data; ``detail`` says what the sources are (e.g. a model, not the app). Returns the
    footer.
    """
    label = source_label(sources)
    _SOURCES[fig] = label
    text = f"source: {label}" + (f"; {detail}" if detail else "")
    fig.text(0.99, 0.005, text, ha="right", va="bottom", fontsize=7, color="0.4")
    return text


def saved_source(path: str | Path) -> str | None:
    """The source statement kept in a saved PNG's metadata (None when it has none)."""
    from PIL import Image

    with Image.open(path) as image:
        return image.info.get(PNG_SOURCE_KEY)


def barh_counts(ax: plt.Axes, labels: list[str], counts: list[int], total: int, color: str) -> None:
    y = np.arange(len(labels))
    ax.barh(y, counts, color=color)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    for yi, count in zip(y, counts, strict=True):
        ax.text(count + max(counts) * 0.01, yi, f"{count} ({count / total:.0%})", va="center")
    ax.set_xlim(0, max(counts) * 1.22)
    ax.set_xlabel("respondents")
