"""The released user study: the counts behind Figures 1–5, Cohen's kappa, IUIPC-8.

Column meanings (checked against the questionnaire PDF): Q61 = Q1 "why do you mute",
Q104 = Q2 "background activities while muted", Q62 = Q3 "what does mute do" (coded columns
``*_coded``; ``Q62_coded_old`` is an earlier codebook of Q3), Q71 = Q4 "when does the app have
access to the microphone", Q72 = Q5 "when should it", both as comma-separated statement numbers
1–5, Q90 = "have you used the mute button" and Q107–Q116 the IUIPC-8 items already mapped to
-3…+3 by the authors (``privacyScore`` is their mean).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reallymuted.io import DataError

log = logging.getLogger(__name__)

SOURCE = "reference"

OPEN_QUESTIONS = {  # paper's question id -> coded survey column
    "Q1": "Q61_coded",
    "Q2": "Q104_coded",
    "Q3": "Q62_coded",
}
EARLIER_CODEBOOKS = {"Q3": "Q62_coded_old"}
KAPPA_FILES = {"Q1": "Q61Cohen.csv", "Q2": "Q104Cohen.csv", "Q3": "Q62Cohen.csv"}
STATEMENT_QUESTIONS = {"Q4": "Q71", "Q5": "Q72"}
STATEMENTS = {
    "S1": "app not running",
    "S2": "app running, not in a meeting",
    "S3": "in a meeting and muted",
    "S4": "in a meeting and unmuted",
    "S5": "left the meeting, app still running",
}
IUIPC_ITEMS = ["Q107", "Q116", "Q108", "Q109", "Q110", "Q111", "Q112", "Q113"]
# Qualtrics recode values of Q90 "Have you used the mute button…?", in the PDF's option order.
USED_MUTE_YES = 23
REQUIRED_COLUMNS = [
    "Q90",
    *OPEN_QUESTIONS.values(),
    *STATEMENT_QUESTIONS.values(),
    *IUIPC_ITEMS,
    "privacyScore",
]


@dataclass(frozen=True)
class UserStudyTables:
    codes: pd.DataFrame
    statements: pd.DataFrame
    combinations: pd.DataFrame
    kappa: pd.DataFrame
    iuipc: pd.DataFrame
    values: dict[str, Any]


def load_survey(path: str | Path) -> pd.DataFrame:
    """Read the released survey; reject a file with missing columns or cut-off rows."""
    try:
        survey = pd.read_csv(path, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{path}: not a readable CSV ({exc}); the file looks truncated or damaged"
        ) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in survey.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    needed = [*STATEMENT_QUESTIONS.values(), *IUIPC_ITEMS, "Q90"]
    incomplete = survey[needed].isna().any(axis=1)
    if incomplete.any():
        first = int(np.flatnonzero(incomplete.to_numpy())[0])
        empty = [c for c in needed if pd.isna(survey.iloc[first][c])]
        raise DataError(
            f"{path}: row {first + 2} (response {first + 1}) has no value for "
            f"{', '.join(empty)}; the file looks truncated or damaged "
            f"({int(incomplete.sum())} incomplete row(s))"
        )
    for column in IUIPC_ITEMS:
        if not pd.api.types.is_numeric_dtype(survey[column]):
            raise DataError(f"{path}: column {column} is not numeric")
    return survey


def split_codes(cell: Any) -> list[str]:
    """``'Cleaning/Vacuum,Cooking/eating,'`` -> ``['Cleaning/Vacuum', 'Cooking/eating']``."""
    if not isinstance(cell, str):
        return []
    return [c.strip() for c in cell.split(",") if c.strip()]


def statement_set(cell: Any) -> frozenset[str]:
    return frozenset(f"S{s}" for s in split_codes(str(cell)))


def combination_name(statements: frozenset[str]) -> str:
    return "+".join(sorted(statements)) if statements else "(none)"


def code_counts(survey: pd.DataFrame) -> pd.DataFrame:
    """Respondents per code of each open question (a respondent may have several codes)."""
    n = len(survey)
    rows = []
    columns = {**OPEN_QUESTIONS, **{q + "-earlier": c for q, c in EARLIER_CODEBOOKS.items()}}
    for question, column in columns.items():
        if column not in survey.columns:
            continue
        counts: dict[str, int] = {}
        for cell in survey[column]:
            for code in set(split_codes(cell)):
                counts[code] = counts.get(code, 0) + 1
        for code, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            rows.append(
                {
                    "source": SOURCE,
                    "question": question.removesuffix("-earlier"),
                    "codebook": "earlier" if question.endswith("-earlier") else "released",
                    "survey_column": column,
                    "code": code,
                    "respondents": count,
                    "share": count / n,
                }
            )
    return pd.DataFrame(rows)


def statement_counts(survey: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Q4/Q5: respondents per statement, and per exact combination of statements."""
    n = len(survey)
    per_statement, per_combination = [], []
    for question, column in STATEMENT_QUESTIONS.items():
        sets = survey[column].map(statement_set)
        for statement, text in STATEMENTS.items():
            count = int(sets.map(lambda s, st=statement: st in s).sum())
            per_statement.append(
                {
                    "source": SOURCE,
                    "question": question,
                    "statement": statement,
                    "statement_text": text,
                    "respondents": count,
                    "share": count / n,
                }
            )
        combos = sets.map(combination_name).value_counts()
        for combo, count in sorted(combos.items(), key=lambda kv: (-kv[1], kv[0])):
            per_combination.append(
                {
                    "source": SOURCE,
                    "question": question,
                    "combination": combo,
                    "respondents": int(count),
                    "share": count / n,
                }
            )
    return pd.DataFrame(per_statement), pd.DataFrame(per_combination)


def load_coder_file(path: str | Path) -> tuple[list[set[str]], list[set[str]]]:
    """Two coders' code sets per answer: columns ``Code k`` (coder A) and ``Code kY`` (coder B)."""
    try:
        table = pd.read_csv(path, encoding="utf-8-sig", dtype=str).fillna("")
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    coder_a = [c for c in table.columns if c.startswith("Code") and not c.endswith("Y")]
    coder_b = [c for c in table.columns if c.startswith("Code") and c.endswith("Y")]
    if not coder_a or len(coder_a) != len(coder_b):
        raise DataError(f"{path}: expected paired 'Code k' / 'Code kY' columns, got {list(table)}")
    if len(table) == 0:
        raise DataError(f"{path}: no coded answers")
    a = [{v.strip() for v in row if v.strip()} for row in table[coder_a].to_numpy()]
    b = [{v.strip() for v in row if v.strip()} for row in table[coder_b].to_numpy()]
    return a, b


def cohen_kappa(a: list[int], b: list[int]) -> float:
    """Cohen's kappa of two coders' answers, unweighted, by scikit-learn's
    ``cohen_kappa_score`` arithmetic (integer confusion matrix over the sorted labels of both,
    as floats; expected counts ``outer(column sums, row sums) / total``; ``1 - sum(off-diagonal
    observed) / sum(off-diagonal expected)``), the same operations in the same order and so
    the same float (a test compares them), without importing scikit-learn (two seconds of this
    job's start). Undefined (0/0) is nan."""
    y1, y2 = np.asarray(a), np.asarray(b)
    labels = np.unique(np.concatenate([y1, y2]))
    n = len(labels)
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (np.searchsorted(labels, y1), np.searchsorted(labels, y2)), 1)
    confusion = counts.astype(np.float64)
    sum0 = np.sum(confusion, axis=0)
    sum1 = np.sum(confusion, axis=1)
    numerator = np.outer(sum0, sum1)
    denominator = np.sum(sum0)
    if denominator == 0:
        return math.nan
    expected = numerator / denominator
    weights = np.ones([n, n], dtype=np.float64)
    np.fill_diagonal(weights, 0)
    denominator = np.sum(weights * expected)
    if denominator == 0:
        return math.nan
    return float(1 - np.sum(weights * confusion) / denominator)


def kappa_per_code(coder_a: list[set[str]], coder_b: list[set[str]]) -> dict[str, float]:
    """Cohen's kappa of each code, treating "answer has this code" as each coder's yes/no."""
    codes = sorted(set().union(*coder_a, *coder_b))
    result = {}
    for code in codes:
        a = [int(code in s) for s in coder_a]
        b = [int(code in s) for s in coder_b]
        # kappa is undefined (nan) when both coders give one constant answer
        result[code] = cohen_kappa(a, b) if len(set(a) | set(b)) > 1 else math.nan
    return result


def kappa_table(coder_files: dict[str, str | Path]) -> pd.DataFrame:
    rows = []
    for question, path in coder_files.items():
        coder_a, coder_b = load_coder_file(path)
        per_code = kappa_per_code(coder_a, coder_b)
        for code, kappa in per_code.items():
            rows.append(
                {
                    "source": SOURCE,
                    "question": question,
                    "code": code,
                    "kappa": kappa,
                    "coder_a_yes": sum(code in s for s in coder_a),
                    "coder_b_yes": sum(code in s for s in coder_b),
                    "answers": len(coder_a),
                }
            )
        defined = [k for k in per_code.values() if not math.isnan(k)]
        rows.append(
            {
                "source": SOURCE,
                "question": question,
                "code": "(mean over codes)",
                "kappa": float(np.mean(defined)) if defined else math.nan,
                "coder_a_yes": math.nan,
                "coder_b_yes": math.nan,
                "answers": len(coder_a),
            }
        )
    return pd.DataFrame(rows)


def cronbach_alpha(items: pd.DataFrame) -> float:
    k = items.shape[1]
    item_variances = items.var(ddof=1).sum()
    total_variance = items.sum(axis=1).var(ddof=1)
    return float(k / (k - 1) * (1 - item_variances / total_variance))


def iuipc_table(survey: pd.DataFrame) -> pd.DataFrame:
    items = survey[IUIPC_ITEMS].astype(float)
    recomputed = items.mean(axis=1)
    # the released privacyScore is the authors' per-person mean; say if it disagrees with ours
    max_gap = float((recomputed - survey["privacyScore"]).abs().max())
    stats = {
        "respondents": len(survey),
        "items": len(IUIPC_ITEMS),
        "mean_score": float(survey["privacyScore"].mean()),
        "sd_score": float(survey["privacyScore"].std(ddof=1)),
        "median_score": float(survey["privacyScore"].median()),
        "cronbach_alpha": cronbach_alpha(items),
        "max_gap_released_vs_recomputed_score": max_gap,
    }
    return pd.DataFrame([{"source": SOURCE, "statistic": k, "value": v} for k, v in stats.items()])


def analyse(survey_path: str | Path, coder_files: dict[str, str | Path]) -> UserStudyTables:
    survey = load_survey(survey_path)
    codes = code_counts(survey)
    statements, combinations = statement_counts(survey)
    kappa = kappa_table(coder_files)
    iuipc = iuipc_table(survey)
    values = claim_values(survey, codes, combinations, kappa, iuipc)
    log.info("user study: %d valid responses analysed", len(survey))
    return UserStudyTables(codes, statements, combinations, kappa, iuipc, values)


def claim_values(
    survey: pd.DataFrame,
    codes: pd.DataFrame,
    combinations: pd.DataFrame,
    kappa: pd.DataFrame,
    iuipc: pd.DataFrame,
) -> dict[str, Any]:
    """The named numbers the claims table compares with the paper."""
    n = len(survey)

    def combo(question: str, name: str) -> int:
        hit = combinations[(combinations.question == question) & (combinations.combination == name)]
        return int(hit.respondents.sum())

    def code(question: str, name: str, codebook: str = "released") -> int:
        hit = codes[
            (codes.question == question) & (codes.code == name) & (codes.codebook == codebook)
        ]
        return int(hit.respondents.sum())

    q4 = survey[STATEMENT_QUESTIONS["Q4"]].map(statement_set)
    q3 = survey[OPEN_QUESTIONS["Q3"]].map(lambda c: set(split_codes(c)))
    mean_kappa = kappa[kappa.code == "(mean over codes)"].set_index("question").kappa
    stat = iuipc.set_index("statistic").value
    codebook_sizes = (
        codes.groupby(["question", "codebook"]).code.nunique().rename(lambda x: x).to_dict()
    )
    return {
        "valid_participants": n,
        "used_mute_button": int((survey["Q90"] == USED_MUTE_YES).sum()),
        "q4_only_s4": combo("Q4", "S4"),
        "q4_not_s3": int((~q4.map(lambda s: "S3" in s)).sum()),
        "q4_s2_s3_s4_s5": combo("Q4", "S2+S3+S4+S5"),
        "q4_s3_s4": combo("Q4", "S3+S4"),
        "q5_only_s4": combo("Q5", "S4"),
        "q5_s3_s4": combo("Q5", "S3+S4"),
        "q3_disable_access": code("Q3", "Disable Access"),
        "q3_block_or_disable_share": float(
            q3.map(lambda s: bool(s & {"Block Sending", "Disable Access"})).mean()
        ),
        "kappa_q1": float(mean_kappa["Q1"]),
        "kappa_q2": float(mean_kappa["Q2"]),
        "kappa_q3": float(mean_kappa["Q3"]),
        "iuipc_mean": float(stat["mean_score"]),
        "iuipc_alpha": float(stat["cronbach_alpha"]),
        "iuipc_score_gap": float(stat["max_gap_released_vs_recomputed_score"]),
        "codebook_size_q1": int(codebook_sizes[("Q1", "released")]),
        "codebook_size_q2": int(codebook_sizes[("Q2", "released")]),
        "codebook_size_q3": int(codebook_sizes[("Q3", "released")]),
        "codebook_size_q3_earlier": int(codebook_sizes.get(("Q3", "earlier"), 0)),
    }


def write_outputs(tables: UserStudyTables, out: dict[str, str | Path]) -> None:
    """Write every user-study table; ``out`` maps codes, statements, combinations, kappa,
    iuipc and values to paths."""
    from reallymuted.io import write_csv, write_json

    write_csv(out["codes"], tables.codes)
    write_csv(out["statements"], tables.statements)
    write_csv(out["combinations"], tables.combinations)
    write_csv(out["kappa"], tables.kappa)
    write_csv(out["iuipc"], tables.iuipc)
    write_json(out["values"], {"source": SOURCE, **tables.values})
