"""The claims table: verdicts, tolerances, omitted rows and the exchanged-values note."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from reallymuted import claims


def _write(tmp_path: Path, claim_list: list, values: dict) -> tuple[Path, list[Path]]:
    claims_path = tmp_path / "claims.yaml"
    claims_path.write_text(yaml.safe_dump(claim_list))
    paths = []
    for stem, content in values.items():
        path = tmp_path / f"{stem}.json"
        path.write_text(json.dumps(content))
        paths.append(path)
    return claims_path, paths


def _claim(cid: str, parts: list, **extra) -> dict:
    return {"id": cid, "claim": f"claim {cid}", "paper_value": "p", "parts": parts, **extra}


def test_verdicts_respect_tolerances(tmp_path: Path) -> None:
    claim_list = [
        _claim("A", [{"computed": "s.count", "expected": 10, "unit": "count", "tolerance": 0}]),
        _claim("B", [{"computed": "s.share", "expected": 70, "unit": "percent", "tolerance": 5}]),
        _claim("C", [{"computed": "s.share", "expected": 60, "unit": "percent", "tolerance": 5}]),
        _claim("D", [{"computed": "s.gains", "range": [14, 97], "unit": "count"}]),
        _claim("E", [{"computed": "s.names", "expected": ["b", "a"], "unit": "set"}]),
    ]
    values = {
        "s": {
            "source": "reference",
            "count": 11,
            "share": 0.66,
            "gains": [20, 98],
            "names": ["a", "b"],
        }
    }
    table = claims.build_table(*_write(tmp_path, claim_list, values)).set_index("id")
    assert table.loc["A", "verdict"] == "differs: +1"
    assert table.loc["B", "verdict"] == "reproduced (within ±5 pp)"
    assert table.loc["B", "computed_value"] == "66.00 %"
    assert table.loc["C", "verdict"] == "differs: +6 pp"
    assert table.loc["D", "verdict"] == "differs: 98 outside 14–97"
    assert table.loc["E", "verdict"] == "reproduced (exact)"
    assert set(table.source) == {"reference"}


def test_claims_without_computed_values_get_no_row(tmp_path: Path) -> None:
    claim_list = [
        _claim("A", [{"computed": "s.x", "expected": 1, "unit": "count"}]),
        _claim("B", [{"computed": "other_stage.y", "expected": 1, "unit": "count"}]),
    ]
    table = claims.build_table(*_write(tmp_path, claim_list, {"s": {"x": 1}}))
    assert table.id.tolist() == ["A"]


def test_exchanged_values_are_named(tmp_path: Path) -> None:
    parts = [
        {"label": "Q1", "computed": "s.a", "expected": 0.85, "tolerance": 0.005},
        {"label": "Q2", "computed": "s.b", "expected": 0.90, "tolerance": 0.005},
        {"label": "Q3", "computed": "s.c", "expected": 0.82, "tolerance": 0.005},
    ]
    values = {"s": {"a": 0.852, "b": 0.821, "c": 0.904}}
    row = claims.build_table(*_write(tmp_path, [_claim("K", parts)], values)).iloc[0]
    assert row.verdict.startswith("differs: Q2 -0.079")
    assert "computed Q2 matches the paper's Q3" in row.note
    assert "appear exchanged" in row.note


def test_notes_quote_computed_values(tmp_path: Path) -> None:
    claim = _claim(
        "N",
        [{"computed": "s.x", "expected": 9, "unit": "count", "tolerance": 0}],
        note_if_differs="the other column has {s.y} codes",
    )
    row = claims.build_table(*_write(tmp_path, [claim], {"s": {"x": 7, "y": 9}})).iloc[0]
    assert row.note == "the other column has 9 codes"


def test_every_shipped_claim_is_well_formed(repo_root: Path) -> None:
    shipped = yaml.safe_load((repo_root / "workflow/resources/paper_claims.yaml").read_text())
    ids = [c["id"] for c in shipped]
    assert len(ids) == len(set(ids))
    for claim in shipped:
        assert claim["parts"], claim["id"]
        for part in claim["parts"]:
            assert ("expected" in part) != ("range" in part), claim["id"]
            assert "." in part["computed"], claim["id"]


def test_user_study_rows_on_the_reference_data(repo_root: Path, reference_dir: Path, tmp_path):
    from reallymuted import userstudy

    study = reference_dir / "UserStudy"
    tables = userstudy.analyse(
        study / "clean_survey_file_total.csv",
        {q: study / n for q, n in userstudy.KAPPA_FILES.items()},
    )
    values_path = tmp_path / "userstudy.json"
    values_path.write_text(json.dumps({"source": "reference", **tables.values}))
    table = claims.build_table(repo_root / "workflow/resources/paper_claims.yaml", [values_path])
    verdicts = table.set_index("id").verdict
    # counts taken from the same CSV as the paper's must agree exactly
    for cid in ["U1", "U3", "U4", "U5", "U6", "U7", "U8"]:
        assert verdicts[cid] == "reproduced (exact)", cid
    assert verdicts["U11"].startswith("differs")  # Q2/Q3 kappas exchanged in the paper


@pytest.mark.parametrize("bad", ["{", "[1,"])
def test_broken_values_file_names_the_file(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "broken.json"
    path.write_text(bad)
    with pytest.raises(claims.DataError, match=r"broken\.json"):
        claims.load_values([path])
