"""Source statements follow the rows they describe: report captions, figure footers, values.

Captions (workflow/report/*.rst) are static text, so they never assert a source: they point to
the `source` column of a table or to the footer of a figure. Footers are built from the rows a
figure draws and kept in the PNG's metadata; values files name the sources of their rows, and
``source_of`` each key's. :func:`problems` checks a results tree against all three; it runs on
a tree built here from recorded sessions, and on this checkout's own ``results/`` after a run.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from reallymuted.analysis.evidence import source_label
from reallymuted.figures import saved_source

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("testbed-profile", "testbed", "sdk-preview", "sdk", "desktop", "native", "web")
SOURCES += ("reference", "registry")
WORD = "|".join(SOURCES)
# "source: testbed", "sources testbed, reference", "(source reference": a source asserted.
ASSERTED = re.compile(rf"\bsources?:?\s+(?:the\s+)?({WORD})\b(?:\s*(?:,|and|or)\s*({WORD})\b)*")
POINTERS = ("`source` column", "footer")


def asserted_sources(caption: str) -> set[str]:
    """The sources a caption states as fact (empty when it states none)."""
    found: set[str] = set()
    for match in ASSERTED.finditer(caption):
        found |= set(re.findall(rf"\b({WORD})\b", match.group(0)))
    return found


def report_outputs(repo: Path = REPO) -> list[tuple[str, Path]]:
    """(output pattern, caption file) of every ``report(...)`` in the workflow's rules."""
    pairs = []
    for rules in sorted((repo / "workflow/rules").glob("*.smk")):
        text = rules.read_text()
        for match in re.finditer(r'report\(\s*f?"([^"]+)",\s*caption="\.\./report/([^"]+)"', text):
            pairs.append((match.group(1), repo / "workflow/report" / match.group(2)))
    return pairs


def _outputs(root: Path, pattern: str) -> Iterator[Path]:
    """The files of a results tree that an output pattern (with {wildcards}) names."""
    yield from sorted(root.glob(re.sub(r"\{[^}]+\}", "*", pattern)))


def caption_problems(caption: Path, output: Path) -> list[str]:
    """A caption asserting a source, or pointing to a column the table does not have."""
    text = caption.read_text()
    found = []
    if asserted_sources(text):
        found.append(f"{caption.name} asserts source(s) {sorted(asserted_sources(text))}")
    points = output.suffix == ".csv" and "`source` column" in text
    if points and "source" not in pd.read_csv(output, nrows=0).columns:
        found.append(f"{caption.name} points to a `source` column {output.name} lacks")
    return found


def footer_problems(figure: Path, rows: pd.Series | list[str]) -> list[str]:
    """A figure whose saved source statement is not that of the rows it draws."""
    saved, expected = saved_source(figure), f"source: {source_label(rows)}"
    return [] if saved == expected else [f"{figure}: footer says {saved!r}, rows {expected!r}"]


def values_problems(values_path: Path, table: pd.DataFrame) -> list[str]:
    """A values file whose source is not that of the table rows it was computed from."""
    values = json.loads(values_path.read_text())
    expected = source_label(table.source)
    if values.get("source") != expected:
        return [f"{values_path}: source {values.get('source')!r}, rows {expected!r}"]
    known = set(table.source.astype(str))
    odd = {k: s for k, s in (values.get("source_of") or {}).items() if s not in known}
    return [f"{values_path}: source_of names sources its rows lack: {odd}"] if odd else []


def _timeline_rows(figure: Path, root: Path) -> list[str]:
    """The manifest behind a session timeline (timelines/{app}/{mode}-{stimulus}-rep{rep})."""
    condition, rep = figure.stem.rsplit("-rep", 1)
    manifest = root / "raw" / figure.parent.name / condition / f"rep{rep}" / "manifest.json"
    return [json.loads(manifest.read_text())["source"]]


def _apps_rows(root: Path) -> pd.Series:
    """The rows the ten-app figure draws: the measured testbed profiles and vendor libraries."""
    table = pd.read_csv(root / "tables/apps_headline.csv")
    drawn_sources = ("testbed-profile", "sdk", "sdk-preview")
    drawn = table[(table.status == "measured") & table.source.isin(drawn_sources)]
    return drawn.source


def problems(results: Path) -> list[str]:
    """Every source statement of a results tree that disagrees with its rows."""
    found: list[str] = []
    for pattern, caption in report_outputs():
        for output in _outputs(results.parent, pattern):
            found += caption_problems(caption, output)
            if output.suffix == ".png":
                found += [] if saved_source(output) else [f"{output}: no source statement"]
    for figure in (results / "figures/timelines").glob("*/*.png"):
        found += footer_problems(figure, _timeline_rows(figure, results))
    if (results / "figures/apps_side_by_side.png").is_file():
        found += footer_problems(results / "figures/apps_side_by_side.png", _apps_rows(results))
    pairs = [
        ("values/testbed.json", "tables/mic_policy.csv"),
        ("values/telemetry_sessions.json", "tables/telemetry_sessions_check.csv"),
        ("values/sdk.json", "tables/sdk_sessions.csv"),
        ("values/guard.json", "tables/guard.csv"),
        ("values/attack_guard.json", "tables/attack_guard.csv"),
    ]
    for values, table in pairs:
        if (results / values).is_file():
            found += values_problems(results / values, pd.read_csv(results / table))
    if (results / "values/attack.json").is_file():
        tables = [pd.read_csv(results / "tables" / n) for n in ATTACK_TABLES]
        found += values_problems(results / "values/attack.json", pd.concat(tables))
    return found


# the attack's values: captured telemetry, and the reference's accuracies beside it
ATTACK_TABLES = ("attack_telemetry.csv", "attack_learning_curve.csv")


# --- the captions --------------------------------------------------------------------------


@pytest.mark.parametrize("caption", sorted((REPO / "workflow/report").glob("*.rst")), ids=str)
def test_captions_point_to_the_data_instead_of_asserting_a_source(caption: Path) -> None:
    text = caption.read_text()
    assert not asserted_sources(text), f"{caption.name}: say it in the data, not the caption"
    if caption.name != "workflow.rst":  # the report's introduction, no output of its own
        assert any(p in text for p in POINTERS), caption.name


def test_every_report_output_has_a_caption_file() -> None:
    outputs = report_outputs()
    assert len(outputs) >= 20
    assert all(caption.is_file() for _, caption in outputs)


def test_the_old_captions_are_caught() -> None:
    """What session_states.rst said while the table held testbed-profile sessions too."""
    old = "Per testbed session and mute state: ... G.711 payload RMS); source: testbed."
    assert asserted_sources(old) == {"testbed"}
    assert asserted_sources("captured telemetry (source testbed-profile, held-out") == {
        "testbed-profile"
    }
    assert asserted_sources("sources: reference, testbed-profile") == {
        "reference",
        "testbed-profile",
    }
    assert not asserted_sources("each row's source in its `source` column (testbed: a client)")


# --- a results tree built from recorded sessions -------------------------------------------


@pytest.fixture(scope="module")
def recorded_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/ of a study of two recorded sessions: Chromium's soft mute (source testbed)
    and the webex-2021 profile (source testbed-profile), through the stages' own code."""
    from reallymuted.analysis import extract, micpolicy
    from reallymuted.analysis.telemetry import sessions as telemetry_sessions
    from reallymuted.figures import sessions as session_figures

    root = tmp_path_factory.mktemp("study") / "results"
    recorded = {
        "chromium/soft-tone/rep1": REPO / "tests/data/sessions/chromium/soft-tone/rep1",
        "webex-2021/app-steps/rep1": REPO / "tests/data/profiles/webex-2021/app-steps/rep1",
    }
    parts: dict[str, list[str]] = {"states": [], "policy": [], "flows": []}
    for name, source in recorded.items():
        raw = root / "raw" / name
        shutil.copytree(source, raw)
        work = root / "sessions" / name
        work.mkdir(parents=True)
        extract.extract_session(raw, work / "packets.parquet", work / "reads.parquet")
        outs = {k: work / f"{k}.out" for k in parts}
        micpolicy.write_session_analysis(
            raw,
            work / "packets.parquet",
            work / "reads.parquet",
            outs,
            micpolicy.PolicyParams(grace_s=0.3),
        )
        for key, path in outs.items():
            parts[key].append(str(path))
        app, condition, rep = name.split("/")
        figure = root / f"figures/timelines/{app}/{condition}-{rep}.png"
        session_figures.timeline_from_files(
            raw, work / "packets.parquet", work / "reads.parquet", [figure]
        )
    study = {
        "states": root / "tables/session_states.csv",
        "policy": root / "tables/mic_policy.csv",
        "flows": root / "tables/session_flows.csv",
        "values": root / "values/testbed.json",
    }
    micpolicy.write_tables(parts["states"], parts["policy"], parts["flows"], study)
    profile = root / "sessions/webex-2021/app-steps/rep1"
    telemetry_sessions.write_session(
        root / "raw/webex-2021/app-steps/rep1",
        profile / "packets.parquet",
        profile / "telemetry.csv",
        profile / "telemetry_check.json",
    )
    telemetry_sessions.write_study(
        [str(profile / "telemetry.csv")],
        [str(profile / "telemetry_check.json")],
        {
            "table": root / "tables/telemetry_sessions.csv",
            "check": root / "tables/telemetry_sessions_check.csv",
            "values": root / "values/telemetry_sessions.json",
        },
    )
    return root


def test_a_recorded_study_states_its_sources_from_its_rows(recorded_results: Path) -> None:
    policy = pd.read_csv(recorded_results / "tables/mic_policy.csv")
    assert set(policy.source) == {"testbed", "testbed-profile"}  # the case that was wrong
    assert problems(recorded_results) == []
    values = json.loads((recorded_results / "values/testbed.json").read_text())
    assert values["source"] == "testbed, testbed-profile"
    telemetry = json.loads((recorded_results / "values/telemetry_sessions.json").read_text())
    assert telemetry["source"] == "testbed-profile"


def test_a_wrong_statement_is_caught(recorded_results: Path, tmp_path: Path) -> None:
    """The values file as micpolicy wrote it before, and a footer that names one source for
    rows of two, both fail."""
    import matplotlib.pyplot as plt

    from reallymuted.figures import save, source_footer

    values = json.loads((recorded_results / "values/testbed.json").read_text())
    (tmp_path / "testbed.json").write_text(json.dumps({**values, "source": "testbed"}))
    policy = pd.read_csv(recorded_results / "tables/mic_policy.csv")
    assert values_problems(tmp_path / "testbed.json", policy)
    fig = plt.figure()
    source_footer(fig, ["testbed"])
    save(fig, [tmp_path / "f.png"])
    assert footer_problems(tmp_path / "f.png", policy.source)
    assert not footer_problems(tmp_path / "f.png", ["testbed", "testbed"])


def test_this_checkouts_results_state_their_sources() -> None:
    """The real outputs of the last run in this checkout (skipped before any run)."""
    results = REPO / "results"
    if not (results / "tables/claims.csv").is_file():
        pytest.skip("no run in this checkout: `snakemake -c all` first")
    assert problems(results) == []
