"""The claims table: verdicts, tolerances, verdict classes by source, rows for every claim
(measured or not, and why) and the exchanged-values note."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from reallymuted import claims
from reallymuted.io import DataError


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


def test_a_claim_whose_stage_is_off_keeps_its_row_and_says_why(tmp_path: Path) -> None:
    claim_list = [
        _claim("A", [{"computed": "s.x", "expected": 1, "unit": "count"}]),
        _claim("B", [{"computed": "other_stage.y", "expected": 1, "unit": "count"}]),
    ]
    paths = _write(tmp_path, claim_list, {"s": {"source": "reference", "x": 1}})
    table = claims.build_table(*paths, absent={"other_stage": "stage other switched off"})
    assert table.id.tolist() == ["A", "B"]
    row = table.set_index("id").loc["B"]
    assert row.verdict == "not measured here: stage other switched off"
    assert row.computed_value == "not measured" and row.source == "none"


def test_reasons_for_absent_values_files() -> None:
    stages = {"reference": True, "sessions": True, "attack": True}
    files = ["results/values/userstudy.json", "results/values/testbed.json"]
    # the reference stage ran: its missing files get no reason, so their claims fail loudly
    assert claims.absent_reasons(stages, False, files) == {
        "attack": "the attack's telemetry apps are not in sessions.select"
    }
    off = {"reference": False, "sessions": True, "attack": False}
    assert claims.absent_reasons(off, True, ["results/values/testbed.json"]) == {
        "userstudy": "stage reference switched off (config.yaml stages.reference)",
        "telemetry_reference": "stage reference switched off (config.yaml stages.reference)",
        "classifier_reference": "stage reference switched off (config.yaml stages.reference)",
        "attack": "stage attack switched off (config.yaml stages.attack)",
    }


def test_a_values_file_absent_without_a_reason_is_an_error(tmp_path: Path) -> None:
    claim_list = [_claim("B", [{"computed": "other_stage.y", "expected": 1, "unit": "count"}])]
    with pytest.raises(claims.DataError, match=r"claim B: .*other_stage\.json"):
        claims.build_table(*_write(tmp_path, claim_list, {}))


def test_a_value_missing_although_its_stage_ran_names_claim_and_file(tmp_path: Path) -> None:
    claim_list = [_claim("A", [{"computed": "s.gone", "expected": 1, "unit": "count"}])]
    with pytest.raises(claims.DataError, match=r"claim A: .*s\.json has no value 'gone'"):
        claims.build_table(*_write(tmp_path, claim_list, {"s": {"source": "reference"}}))


def test_a_value_of_sessions_that_did_not_run_says_which(tmp_path: Path) -> None:
    part = {
        "computed": "t.native_continuous_apps",
        "expected": ["webex"],
        "unit": "set",
        "needs": {"sources": "native"},
        "not_run": "native hosts not run",
    }
    ran = {"source": "testbed", "sources": ["testbed"]}
    row = claims.build_table(*_write(tmp_path, [_claim("M1", [part])], {"t": ran})).iloc[0]
    assert row.verdict == "not measured here: native hosts not run"
    # the sessions ran, so a missing value is the stage's fault, not a reason
    ran = {"source": "native", "sources": ["native"]}
    with pytest.raises(claims.DataError, match="claim M1"):
        claims.build_table(*_write(tmp_path, [_claim("M1", [part])], {"t": ran}))


def test_a_claim_checked_only_on_a_model_is_never_reproduced(tmp_path: Path) -> None:
    ranged = {"computed": "a.r", "range": [0.7, 1.0], "range_by": "project", "unit": "ratio"}
    claim_list = [
        _claim("T2", [ranged, {"computed": "a.flag", "expected": "True", "unit": "text"}]),
        _claim("X", [{"computed": "a.r", "range": [0.9, 1.0], "range_by": "project"}]),
    ]
    values = {"a": {"source": "testbed-profile", "r": 0.8, "flag": True}}
    table = claims.build_table(*_write(tmp_path, claim_list, values)).set_index("id")
    passed = table.loc["T2", "verdict"]
    assert passed.startswith("instrument check passed (model, not the app): ")
    assert "the project's range 0.7–1" in passed and "published" not in passed
    assert table.loc["X", "verdict"].startswith("instrument check failed (model, not the app): ")
    assert not table.verdict.str.contains("reproduced").any()


def test_sources_per_key_of_a_mixed_values_file(tmp_path: Path) -> None:
    """The testbed's values hold real clients and models: each key's own source decides."""
    part = {"computed": "t.policy_chromium_soft", "expected": "continuous", "unit": "text"}
    mixed = {
        "source": "testbed, testbed-profile",
        "policy_chromium_soft": "continuous",
        "policy_webex_2021_app": "continuous",
        "source_of": {
            "policy_chromium_soft": "testbed",
            "policy_webex_2021_app": "testbed-profile",
        },
    }
    paths = _write(tmp_path, [_claim("M3", [part])], {"t": mixed})
    row = claims.build_table(*paths).iloc[0]
    assert (row.verdict, row.source) == ("reproduced (exact)", "testbed")
    del mixed["source_of"]
    with pytest.raises(claims.DataError, match="no source_of entry"):
        claims.build_table(*_write(tmp_path, [_claim("M3", [part])], {"t": mixed}))


def test_a_part_the_pipeline_cannot_measure_leaves_the_claim_reproduced_in_part(
    tmp_path: Path,
) -> None:
    parts = [
        {"label": "gains", "computed": "r.gains", "range": [14, 97], "unit": "count"},
        {"label": "one POST per minute", "not_measured": "one record has no spacing"},
    ]
    claim = _claim("T1", parts, scope="on the one released record")
    values = {"r": {"source": "reference", "gains": [20, 90]}}
    row = claims.build_table(*_write(tmp_path, [claim], values)).iloc[0]
    assert row.verdict == (
        "reproduced in part (on the one released record; within the published range; "
        "not measured here: one POST per minute)"
    )
    assert row.computed_value == "20–90 / not measured"


def test_project_expected_values_are_labelled(tmp_path: Path) -> None:
    part = {"label": "level", "computed": "t.level", "expected": -127, "expected_by": "project"}
    values = {"t": {"source": "testbed", "level": -127}}
    row = claims.build_table(*_write(tmp_path, [_claim("M3", [part])], values)).iloc[0]
    assert row.verdict == (
        "reproduced (exact; level against the project's expected value, not the paper's)"
    )


def test_the_summary_counts_every_verdict_class(tmp_path: Path) -> None:
    claim_list = [
        _claim("A", [{"computed": "s.x", "expected": 1, "unit": "count"}]),
        _claim("B", [{"computed": "s.x", "expected": 2, "unit": "count"}]),
        _claim("C", [{"computed": "m.x", "expected": 1, "unit": "count"}]),
        _claim("D", [{"label": "p", "not_measured": "a recommendation"}]),
    ]
    values = {"s": {"source": "reference", "x": 1}, "m": {"source": "testbed-profile", "x": 1}}
    table = claims.build_table(*_write(tmp_path, claim_list, values))
    assert claims.summary(table) == (
        "Summary of 4 claims: 1 reproduced, 0 reproduced in part, 1 differs, "
        "1 instrument check passed (model, not the app), "
        "0 instrument check failed (model, not the app), 1 not measured here"
    )
    assert claims.summary(table) in claims.to_markdown(table)


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


PAPER_IDS = [
    *(f"U{i}" for i in range(1, 14)),
    *(f"M{i}" for i in range(1, 5)),
    "T1",
    "T2",
    *(f"C{i}" for i in range(1, 7)),
    *(f"P{i}" for i in range(1, 4)),
]
# the values files a test may leave out (policy.json is in every run, but not in every test)
STEMS = ["userstudy", "telemetry_reference", "classifier_reference", "testbed", "attack", "policy"]


def test_the_claim_ids_are_the_papers(repo_root: Path) -> None:
    paper = repo_root.parent / "shared/PAPER.md"
    if paper.is_file():  # the study's own list, when the checkout has it beside it
        found = re.findall(r"^\| ([UMTCP]\d+) \|", paper.read_text(), re.M)
        assert found == PAPER_IDS
    shipped = yaml.safe_load((repo_root / "workflow/resources/paper_claims.yaml").read_text())
    assert sorted(c["id"] for c in shipped) == sorted(PAPER_IDS)


def test_every_shipped_claim_is_well_formed(repo_root: Path) -> None:
    shipped = yaml.safe_load((repo_root / "workflow/resources/paper_claims.yaml").read_text())
    for claim in shipped:
        assert claim["parts"], claim["id"]
        for part in claim["parts"]:
            if "not_measured" in part:
                assert "computed" not in part, claim["id"]
                continue
            assert ("expected" in part) != ("range" in part), claim["id"]
            assert "." in part["computed"], claim["id"]
            assert part.get("range_by", "paper") in ("paper", "project"), claim["id"]


def test_every_claim_has_a_row_when_no_stage_ran(repo_root: Path) -> None:
    absent = {stem: f"stage of {stem} switched off" for stem in STEMS}
    table = claims.build_table(repo_root / "workflow/resources/paper_claims.yaml", [], absent)
    assert table.id.tolist() == [c for c in table.id if c in PAPER_IDS]
    assert sorted(table.id) == sorted(PAPER_IDS)
    assert table.verdict.str.startswith("not measured here: ").all()
    assert (table.source == "none").all()
    # notes quoting values of stages that did not run are left out, not shown half-filled
    assert not table.note.str.contains(r"\{[a-z_]+\.[a-z0-9_]+\}").any()


def test_shipped_t2_on_the_profile_is_an_instrument_check(repo_root: Path, tmp_path: Path):
    """T2's range is the project's and its evidence the project's model of Webex."""
    attack = {
        "source": "testbed-profile",
        "r_mean_gain_dba": 0.95,
        "r_mean_exceeds_r_min": True,
        "r_min_gain_dba": 0.5,
        "r_min_gain_dba_gapless": 0.6,
        "intervals_muted_page_gaps": 3,
        "r_points": 40,
        "stimulus_source": "synthetic",
    }
    path = tmp_path / "attack.json"
    path.write_text(json.dumps(attack))
    absent = {stem: "off" for stem in STEMS if stem != "attack"}
    table = claims.build_table(repo_root / "workflow/resources/paper_claims.yaml", [path], absent)
    t2 = table.set_index("id").loc["T2"]
    assert t2.verdict.startswith(claims.PASSED_ON_MODEL)
    assert "published range" not in t2.verdict and t2.source == "testbed-profile"


def test_user_study_rows_on_the_reference_data(repo_root: Path, reference_dir: Path, tmp_path):
    from reallymuted.analysis import userstudy

    study = reference_dir / "UserStudy"
    tables = userstudy.analyse(
        study / "clean_survey_file_total.csv",
        {q: study / n for q, n in userstudy.KAPPA_FILES.items()},
    )
    values_path = tmp_path / "userstudy.json"
    values_path.write_text(json.dumps({"source": "reference", **tables.values}))
    absent = {stem: "off" for stem in STEMS if stem != "userstudy"}
    table = claims.build_table(
        repo_root / "workflow/resources/paper_claims.yaml", [values_path], absent
    )
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


def test_classifier_claims_of_windows_not_run_are_not_measured(repo_root: Path, tmp_path: Path):
    """A study of window n = 3 alone (config classifier.windows) measures the n = 3 parts; the
    other windows' parts say why they are absent instead of failing the claims rule."""
    values = {
        "source": "reference",
        "classes": ["cm", "ck", "tk", "dg", "kb", "vc"],
        "windows": [3],
        "validation_random_precision_n3": 0.95,
        **{f"{s}_{m}_n3": 0.8 for s in ("eval1", "eval2") for m in ("accuracy", "precision")},
    }
    path = tmp_path / "classifier_reference.json"
    path.write_text(json.dumps(values))
    absent = {stem: "off" for stem in STEMS if stem != "classifier_reference"}
    table = claims.build_table(repo_root / "workflow/resources/paper_claims.yaml", [path], absent)
    rows = table.set_index("id")
    assert rows.loc["C2"].verdict.startswith("reproduced in part"), rows.loc["C2"].verdict
    assert "not measured here: n=5" in rows.loc["C2"].verdict
    for cid in ("C3", "C5", "C6"):
        assert rows.loc[cid].verdict == (
            "not measured here: window n=7 is not in classifier.windows"
        ), rows.loc[cid].verdict
    assert rows.loc["C4"].verdict == "reproduced (within ±5 pp)", rows.loc["C4"].verdict
    # the window list itself must not be what is missing: without it, every part is an error
    path.write_text(json.dumps({k: v for k, v in values.items() if k != "windows"}))
    with pytest.raises(
        DataError, match=r"claim C2: .* has no value 'validation_random_precision_n5'"
    ):
        claims.build_table(repo_root / "workflow/resources/paper_claims.yaml", [path], absent)


def test_a_note_names_the_sources_of_the_values_it_quotes(tmp_path: Path) -> None:
    """T1's note quotes what Webex's library produced (source sdk) beside parts measured on
    the released record: the row's source names both; a value this run lacks says so."""
    note = "library: {lib.records} record(s); other: {lib.absent}"
    claim_list = [_claim("T", [{"computed": "s.x", "expected": 1, "unit": "count"}], note=note)]
    values = {"s": {"source": "reference", "x": 1}, "lib": {"source": "sdk", "records": 2}}
    row = claims.build_table(*_write(tmp_path, claim_list, values)).set_index("id").loc["T"]
    assert row.source == "reference, sdk"
    assert row.note == "library: 2 record(s); other: [not in this run]"
