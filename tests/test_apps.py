"""The app registry: valid, complete for the paper's ten apps, and read the same way everywhere."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from reallymuted import apps
from reallymuted.config import ConfigError, load_yaml, validate_config

TEN_APPS = {
    "zoom",
    "slack",
    "teams",
    "meet",
    "webex",
    "bluejeans",
    "whereby",
    "gotomeeting",
    "jitsi",
    "discord",
}


@pytest.fixture(scope="module")
def registry(repo_root: Path) -> dict:
    return apps.load_registry(repo_root / "workflow/apps.yaml")


def test_the_papers_ten_apps_are_registered(registry: dict) -> None:
    assert set(registry) == TEN_APPS


def test_paper_findings_are_the_papers(registry: dict) -> None:
    # PAPER.md: M1 Webex only; M4 Teams/Skype; web-only apps M3
    assert [a for a, e in registry.items() if "M1" in e["paper_finding"]["codes"]] == ["webex"]
    assert registry["teams"]["paper_finding"]["codes"] == ["M4"]
    assert registry["teams"]["testbed_profile"] is None
    for app in ("meet", "whereby", "jitsi"):
        assert registry[app]["paper_finding"]["codes"] == ["M3"]


def test_table_2_analogue(registry: dict) -> None:
    table = apps.platforms_table(registry).set_index("app")
    assert table.loc["meet", "windows"] == "web"
    assert table.loc["zoom", "windows"] == "native (WASAPI)"
    assert table.loc["teams", "testbed_profile"] == "none"
    assert set(table.source) == {"registry"}


def test_drivers_follow_the_offer(registry: dict) -> None:
    assert apps.drivers_for(registry["meet"]) == [
        ("testbed-profile", "webrtc-soft-mute"),
        ("web", "web"),
    ]
    assert ("native", "native-windows") in apps.drivers_for(registry["webex"])
    assert all(source != "testbed-profile" for source, _ in apps.drivers_for(registry["teams"]))


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("zoom", "platforms", "windows", "mute_hotkey"), "Alt+Banana", "mute_hotkey"),
        (("zoom", "platforms", "windows"), {"offer": "native"}, "required"),
        (("meet", "platforms", "web", "join_url"), "http://meet.google.com/x", "join_url"),
        (("webex", "testbed_profile"), "webex-2030", "testbed_profile"),
    ],
)
def test_a_broken_registry_is_refused(repo_root: Path, path, value, message) -> None:
    data = copy.deepcopy(load_yaml(repo_root / "workflow/apps.yaml"))
    node = data["apps"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(data, repo_root / "workflow/schemas/apps.schema.yaml")


def test_headline_on_a_recorded_profile_session(repo_root: Path, registry: dict, tmp_path: Path):
    """The recorded webex-2021 session, through extraction and analysis, into the headline."""
    import json

    import pandas as pd

    from reallymuted import extract, micpolicy, telemetry_sessions

    session = repo_root / "tests/data/profiles/webex-2021/app-steps/rep1"
    extract.extract_session(session, tmp_path / "packets.parquet", tmp_path / "reads.parquet")
    parts = {k: tmp_path / f"{k}.out" for k in ("states", "policy", "flows")}
    micpolicy.write_session_analysis(
        session,
        tmp_path / "packets.parquet",
        tmp_path / "reads.parquet",
        parts,
        micpolicy.PolicyParams(grace_s=0.3),
    )
    study = {k: tmp_path / f"study_{k}.csv" for k in ("states", "policy", "flows", "values")}
    micpolicy.write_tables([parts["states"]], [parts["policy"]], [parts["flows"]], study)
    _, check = telemetry_sessions.session_telemetry(session, tmp_path / "packets.parquet")
    checks = pd.DataFrame([json.loads(json.dumps(check, default=str))])

    headline = apps.headline_table(
        registry,
        pd.read_csv(study["policy"]),
        pd.read_csv(study["states"]),
        pd.read_csv(study["flows"]),
        checks,
    )
    webex = headline[(headline.app == "webex") & (headline.source == "testbed-profile")].iloc[0]
    assert webex.status == "measured"
    assert "not the app" in webex.measured_as
    assert webex.audio_derived_data_leaving == "yes"
    assert "telemetry POST" in webex.evidence
    assert "tcp 127.0.0.1" in webex.muted_destinations  # the POSTs to the collector
    # sources that did not run say so, with no numbers
    native = headline[(headline.app == "webex") & (headline.source == "native")]
    assert native.status.str.startswith("not run: needs a").all()
    assert native.muted_read_share_os.isna().all()
    teams = headline[(headline.app == "teams") & (headline.source == "testbed-profile")].iloc[0]
    assert teams.status.startswith("no profile")
    zoom = headline[(headline.app == "zoom") & (headline.source == "testbed-profile")].iloc[0]
    assert zoom.status == "not in this run's configuration"
    assert set(headline.source) == {"testbed-profile", "native", "web"}
