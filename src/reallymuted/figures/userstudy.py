"""Figures 1–5: the user study (plotting only; the counts: reallymuted.analysis.userstudy)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from reallymuted.figures import PALETTE, barh_counts, save, source_footer

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
    barh_counts(ax, rows.code.tolist(), rows.respondents.tolist(), total, PALETTE[0])
    ax.set_title(OPEN_QUESTION_TITLES[question] + f" (coded answers, n = {total})", loc="left")
    source_footer(fig, rows.source, "authors' released survey, coded")
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
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 1]})
    labels = [
        f"{s}: {t}"
        for s, t in zip(per_statement.statement, per_statement.statement_text, strict=True)
    ]
    barh_counts(left, labels, per_statement.respondents.tolist(), total, PALETTE[0])
    left.set_title("selected the statement", loc="left")
    barh_counts(right, combos.combination.tolist(), combos.respondents.tolist(), total, PALETTE[1])
    right.set_title(f"exact combination selected (top {len(combos)})", loc="left")
    fig.suptitle(STATEMENT_QUESTION_TITLES[question] + f" (n = {total})", x=0.01, ha="left")
    source_footer(fig, per_statement.source, "authors' released survey")
    fig.tight_layout()
    save(fig, outputs)


USERSTUDY_FIGURES: dict[str, tuple[str, str]] = {
    "fig1_q1_why_mute": ("open", "Q1"),
    "fig2_q2_background_activities": ("open", "Q2"),
    "fig3_q3_what_mute_does": ("open", "Q3"),
    "fig4_q4_mic_access_believed": ("statement", "Q4"),
    "fig5_q5_mic_access_wanted": ("statement", "Q5"),
}


def plot_userstudy_figure(
    name: str, tables: dict[str, str | Path], outputs: list[str | Path]
) -> None:
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


def plot_userstudy_figures(tables: dict[str, str | Path], outputs: list[str | Path]) -> None:
    """Rule userstudy_figure: every figure named by ``outputs`` (``fig1_q1_why_mute.png``,
    ``fig1_q1_why_mute.pdf``, ...), each drawn once and saved to its files."""
    files: dict[str, list[str | Path]] = {}
    for out in outputs:
        files.setdefault(Path(out).stem, []).append(out)
    for name, paths in files.items():
        plot_userstudy_figure(name, tables, paths)
