"""Figures of the study. Plotting only: every function reads a computed table and draws it.

Each figure states its evidence ``source`` in its title or footer, is saved as PNG (for the
report) and PDF (for print) with fixed metadata so reruns give identical files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

log = logging.getLogger(__name__)

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


def _barh(ax: plt.Axes, labels: list[str], counts: list[int], total: int, color: str) -> None:
    y = np.arange(len(labels))
    ax.barh(y, counts, color=color)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    for yi, count in zip(y, counts, strict=True):
        ax.text(count + max(counts) * 0.01, yi, f"{count} ({count / total:.0%})", va="center")
    ax.set_xlim(0, max(counts) * 1.22)
    ax.set_xlabel("respondents")


# -- user study (Figures 1-5) ----------------------------------------------------------------

OPEN_QUESTION_TITLES = {
    "Q1": "Q1: Why do you use the mute button?",
    "Q2": "Q2: What happens in your background while you are muted?",
    "Q3": "Q3: What does the app do when you press mute?",
}
STATEMENT_QUESTION_TITLES = {
    "Q4": "Q4: When do you think the app has access to your microphone?",
    "Q5": "Q5: When should the app have access to your microphone?",
}


def _respondents(iuipc: pd.DataFrame) -> int:
    return int(iuipc.set_index("statistic").loc["respondents", "value"])


def plot_open_question(
    codes: pd.DataFrame, iuipc: pd.DataFrame, question: str, outputs: list[str | Path]
) -> None:
    """Figures 1–3: respondents per code of one open question (released codebook)."""
    rows = codes[(codes.question == question) & (codes.codebook == "released")]
    rows = rows.sort_values(["respondents", "code"], ascending=[False, True])
    total = _respondents(iuipc)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    _barh(ax, rows.code.tolist(), rows.respondents.tolist(), total, PALETTE[0])
    ax.set_title(OPEN_QUESTION_TITLES[question] + f" (coded answers, n = {total})", loc="left")
    source_footer(fig, f"source: {rows.source.iloc[0]} (authors' released survey, coded)")
    save(fig, outputs)


def plot_statement_question(
    statements: pd.DataFrame,
    combinations: pd.DataFrame,
    iuipc: pd.DataFrame,
    question: str,
    outputs: list[str | Path],
    top_combinations: int = 8,
) -> None:
    """Figures 4–5: respondents per statement S1–S5, and the most frequent exact combinations."""
    total = _respondents(iuipc)
    per_statement = statements[statements.question == question]
    combos = combinations[combinations.question == question].head(top_combinations)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 1]}
    )
    labels = [f"{s}: {t}" for s, t in zip(per_statement.statement, per_statement.statement_text, strict=True)]
    _barh(left, labels, per_statement.respondents.tolist(), total, PALETTE[0])
    left.set_title("selected the statement", loc="left")
    _barh(right, combos.combination.tolist(), combos.respondents.tolist(), total, PALETTE[1])
    right.set_title(f"exact combination selected (top {len(combos)})", loc="left")
    fig.suptitle(STATEMENT_QUESTION_TITLES[question] + f" (n = {total})", x=0.01, ha="left")
    source_footer(fig, f"source: {per_statement.source.iloc[0]} (authors' released survey)")
    fig.tight_layout()
    save(fig, outputs)


USERSTUDY_FIGURES: dict[str, tuple[str, str]] = {
    "fig1_q1_why_mute": ("open", "Q1"),
    "fig2_q2_background_activities": ("open", "Q2"),
    "fig3_q3_what_mute_does": ("open", "Q3"),
    "fig4_q4_mic_access_believed": ("statement", "Q4"),
    "fig5_q5_mic_access_wanted": ("statement", "Q5"),
}


def plot_userstudy_figure(name: str, tables: dict[str, str | Path], outputs: list[str | Path]) -> None:
    kind, question = USERSTUDY_FIGURES[name]
    iuipc = pd.read_csv(tables["iuipc"])
    if kind == "open":
        plot_open_question(pd.read_csv(tables["codes"]), iuipc, question, outputs)
    else:
        plot_statement_question(
            pd.read_csv(tables["statements"]),
            pd.read_csv(tables["combinations"]),
            iuipc,
            question,
            outputs,
        )


