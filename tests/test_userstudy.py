"""User-study analysis on the authors' released survey, and on damaged copies of it."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from reallymuted.analysis import userstudy
from reallymuted.io import DataError


@pytest.fixture(scope="module")
def tables(reference_dir: Path) -> userstudy.UserStudyTables:
    study = reference_dir / "UserStudy"
    return userstudy.analyse(
        study / "clean_survey_file_total.csv",
        {q: study / name for q, name in userstudy.KAPPA_FILES.items()},
    )


def test_counts_match_an_independent_reading_of_the_csv(
    tables: userstudy.UserStudyTables, reference_dir: Path
) -> None:
    # A second, deliberately naive route through the same file: plain string comparisons.
    raw = pd.read_csv(reference_dir / "UserStudy/clean_survey_file_total.csv", dtype=str)
    values = tables.values
    assert values["valid_participants"] == len(raw)
    assert values["q4_only_s4"] == (raw.Q71 == "4").sum()
    assert values["q4_s3_s4"] == (raw.Q71 == "3,4").sum()
    assert values["q4_s2_s3_s4_s5"] == (raw.Q71 == "2,3,4,5").sum()
    assert values["q4_not_s3"] == (~raw.Q71.str.contains("3")).sum()
    assert values["q5_only_s4"] == (raw.Q72 == "4").sum()
    assert values["q5_s3_s4"] == (raw.Q72 == "3,4").sum()
    assert values["used_mute_button"] == (raw.Q90 == "23").sum()


def test_statement_counts_are_consistent(tables: userstudy.UserStudyTables) -> None:
    # every respondent's combination is counted once per question
    per_question = tables.combinations.groupby("question").respondents.sum()
    assert (per_question == tables.values["valid_participants"]).all()
    # a statement's count equals the sum over the combinations that contain it
    for question in ("Q4", "Q5"):
        combos = tables.combinations[tables.combinations.question == question]
        for statement in userstudy.STATEMENTS:
            expected = combos[
                combos.combination.str.split("+").map(lambda s, st=statement: st in s)
            ]
            row = tables.statements[
                (tables.statements.question == question)
                & (tables.statements.statement == statement)
            ]
            assert int(row.respondents.iloc[0]) == expected.respondents.sum()


def test_codes_are_split_and_counted_per_respondent() -> None:
    survey = pd.DataFrame(
        {
            "Q61_coded": ["A,", "A,B", None],
            "Q104_coded": ["X,,", "", "X,Y,X"],
            "Q62_coded": ["Z", "Z,", "Z"],
        }
    )
    codes = userstudy.code_counts(survey)
    got = {(r.question, r.code): r.respondents for r in codes.itertuples()}
    assert got == {("Q1", "A"): 2, ("Q1", "B"): 1, ("Q2", "X"): 2, ("Q2", "Y"): 1, ("Q3", "Z"): 3}


def test_kappa_per_code_by_hand() -> None:
    # coder A: yes, yes, no, no; coder B: yes, no, no, no -> po = .75, pe = .5*.25+.5*.75 = .5
    a = [{"c"}, {"c"}, set(), set()]
    b = [{"c"}, set(), set(), set()]
    assert userstudy.kappa_per_code(a, b)["c"] == pytest.approx(0.5)
    # a code both coders always use has no defined kappa, and is left out of the mean
    assert math.isnan(userstudy.kappa_per_code([{"d"}], [{"d"}])["d"])


def test_cohen_kappa_is_scikit_learns_to_the_bit(reference_dir: Path) -> None:
    """The kappa computed without scikit-learn is its cohen_kappa_score, float for float: on
    every code of the released coder files and on random and lopsided answers."""
    import numpy as np
    from sklearn.metrics import cohen_kappa_score

    pairs = []
    for name in userstudy.KAPPA_FILES.values():
        a, b = userstudy.load_coder_file(reference_dir / "UserStudy" / name)
        for code in sorted(set().union(*a, *b)):
            pairs.append(([int(code in s) for s in a], [int(code in s) for s in b]))
    rng = np.random.default_rng(5)
    for n, p in [(10, 0.5), (97, 0.1), (300, 0.9), (3, 0.5)]:
        pairs.append((list(rng.random(n) < p), list(rng.random(n) < p)))
    pairs += [([0, 0, 0], [1, 1, 1]), ([0, 0, 1], [0, 0, 0]), ([2, 0, 1, 2], [2, 1, 1, 0])]
    checked = 0
    for a, b in pairs:
        if len(set(a) | set(b)) < 2:
            continue
        ours = userstudy.cohen_kappa([int(v) for v in a], [int(v) for v in b])
        theirs = float(cohen_kappa_score([int(v) for v in a], [int(v) for v in b]))
        assert ours == theirs or (math.isnan(ours) and math.isnan(theirs)), (a, b)
        checked += 1
    assert checked > 20


def test_cronbach_alpha_by_hand() -> None:
    items = pd.DataFrame({"a": [1, 2, 3, 4], "b": [2, 3, 4, 5], "c": [1, 3, 2, 4]})
    # k=3, item variances 5/3+5/3+5/3 = 5, total variance of [4,8,9,13] = 13.6667
    assert userstudy.cronbach_alpha(items) == pytest.approx(1.5 * (1 - 5 / (41 / 3)))


@pytest.mark.parametrize(
    ("cut_at", "message"),
    [
        # inside a quoted free-text answer: the CSV parser itself fails
        (0.6, r"survey\.csv: not a readable CSV .*truncated"),
        # after the first fields of a row: the row parses but its answers are missing
        ("row", r"survey\.csv: row 224 .*no value for .*Q71.*truncated"),
    ],
)
def test_truncated_survey_is_rejected_with_file_and_row(
    reference_dir: Path, tmp_path: Path, cut_at: float | str, message: str
) -> None:
    text = (reference_dir / "UserStudy/clean_survey_file_total.csv").read_text(encoding="utf-8-sig")
    if cut_at == "row":
        last_row = text.rstrip("\n").rsplit("\n", 1)[1]
        cut_text = text[: text.rindex(last_row)] + ",".join(last_row.split(",")[:8]) + "\n"
    else:
        cut_text = text[: int(len(text) * cut_at)]
    cut = tmp_path / "survey.csv"
    cut.write_text(cut_text)
    with pytest.raises(DataError, match=message):
        userstudy.load_survey(cut)


def test_survey_without_a_needed_column_is_rejected(reference_dir: Path, tmp_path: Path) -> None:
    survey = pd.read_csv(reference_dir / "UserStudy/clean_survey_file_total.csv")
    broken = tmp_path / "survey.csv"
    survey.drop(columns=["Q72"]).to_csv(broken, index=False)
    with pytest.raises(DataError, match=r"missing column.*Q72"):
        userstudy.load_survey(broken)


def test_coder_file_without_pairs_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "Q1Cohen.csv"
    bad.write_text("Code 1,Code 2\nx,y\n")
    with pytest.raises(DataError, match=r"Q1Cohen\.csv"):
        userstudy.load_coder_file(bad)
