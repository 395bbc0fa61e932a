"""The app registry: valid, complete for the paper's ten apps, and read the same way everywhere."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest

from reallymuted.analysis import apps
from reallymuted.config import ConfigError, load_registry, load_yaml, validate_config

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
    return load_registry(repo_root / "workflow/apps.yaml")


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

    from reallymuted.analysis import extract, micpolicy
    from reallymuted.analysis.telemetry import sessions as telemetry_sessions

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
    assert webex.reads_modelled == "yes"  # M1: a page reading every sample is the finding
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


@pytest.fixture
def native_session(repo_root: Path, tmp_path: Path) -> Path:
    """A native-windows Zoom session as the host runner records it, for the lookup only.

    The manifest is written by ``host.host_manifest`` from the session spec of
    config/native-windows.yaml's ``zoom-windows`` (its config name; the registry id ``zoom`` is
    in its options). No native host has been run, so the evidence is the recorded Chromium
    soft-mute session's, with the OS witness's rows dropped as on a host, which has none: this
    is not a measurement of Zoom.
    """
    import json
    import shutil

    from reallymuted.testbed import host
    from reallymuted.testbed.spec import SessionSpec

    recorded = repo_root / "tests/data/sessions/chromium/soft-tone/rep1"
    session = tmp_path / "raw/zoom-windows/hotkey-speech/rep1"
    session.mkdir(parents=True)
    for name in ("events.jsonl", "traffic.pcapng", "client.log"):
        shutil.copy(recorded / name, session / name)
    trace = (recorded / "mic_trace.jsonl").read_text().splitlines()
    app_only = [line for line in trace if not json.loads(line)["api"].startswith("os:")]
    (session / "mic_trace.jsonl").write_text("\n".join(app_only) + "\n")
    sessions = load_yaml(repo_root / "config.yaml")["sessions"]
    sessions["apps"] |= load_yaml(repo_root / "config/native-windows.yaml")["sessions"]["apps"]
    old = json.loads((recorded / "manifest.json").read_text())
    sessions |= {  # the recording's schedule, which its events follow
        "schedule": old["schedule"]["phases"],
        "lead_s": old["schedule"]["lead_s"],
        "tail_s": old["schedule"]["tail_s"],
    }
    spec = SessionSpec.from_config(sessions, "zoom-windows", "hotkey", "speech", 1, "speech.wav")
    result = {
        "t0_epoch": old["start"]["epoch"],
        "t0_monotonic": old["start"]["monotonic"],
        "end_t": old["end"]["t"],
    }
    manifest = host.host_manifest(spec, result, None, {})
    (session / "manifest.json").write_text(json.dumps(manifest))
    return session


def _study_tables(session: Path, tmp_path: Path) -> dict[str, Path]:
    """One session through extraction and analysis into the study's tables."""
    from reallymuted.analysis import extract, micpolicy

    packets, reads = tmp_path / "packets.parquet", tmp_path / "reads.parquet"
    extract.extract_session(session, packets, reads)
    parts = {k: tmp_path / f"{k}.out" for k in ("states", "policy", "flows")}
    # the recording's phases are 1-1.5 s: a short grace after each mute/unmute
    micpolicy.write_session_analysis(
        session, packets, reads, parts, micpolicy.PolicyParams(grace_s=0.3)
    )
    study = {k: tmp_path / f"study_{k}" for k in ("states", "policy", "flows", "values")}
    micpolicy.write_tables([parts["states"]], [parts["policy"]], [parts["flows"]], study)
    return study


def test_native_sessions_are_found_by_their_registry_app(
    registry: dict, native_session: Path, tmp_path: Path
) -> None:
    """config/native-windows.yaml names Zoom's sessions zoom-windows: they are Zoom's native
    Windows row, not "not run"."""
    import json

    import pandas as pd

    assert json.loads((native_session / "manifest.json").read_text())["source"] == "native"
    study = _study_tables(native_session, tmp_path)
    policy, states = pd.read_csv(study["policy"]), pd.read_csv(study["states"])
    assert set(states[["app", "driver", "registry_app"]].itertuples(index=False)) == {
        ("zoom-windows", "native-windows", "zoom")
    }
    # a host has no OS witness: the app witness labels the policy alone, and says so
    assert policy.loc[0, "muted_read_share_os"] != policy.loc[0, "muted_read_share_os"]
    assert not policy.loc[0, "witnesses_agree"]
    assert policy.loc[0, "policy"] == "continuous"  # Chromium's soft mute, relabelled
    headline = apps.headline_table(registry, policy, states, pd.read_csv(study["flows"]))
    zoom = headline[(headline.app == "zoom") & (headline.source == "native")].set_index(
        "measured_as"
    )
    assert zoom.loc["native-windows", "status"] == "measured"
    assert zoom.loc["native-windows", "policy"] == policy.loc[0, "policy"]
    assert zoom.loc["native-macos", "status"].startswith("not run: needs a macOS host")
    # no other app picks up Zoom's sessions
    others = headline[(headline.app != "zoom") & (headline.source == "native")]
    assert not (others.status == "measured").any()
    # the same session run under the OS-level mute is the guard table's, not Zoom's behaviour
    guarded = states.assign(guard="on")
    headline = apps.headline_table(registry, policy, guarded, pd.read_csv(study["flows"]))
    assert not (headline[headline.source == "native"].status == "measured").any()
    values = json.loads(study["values"].read_text())
    assert values["sources"] == ["native"] and values["native_platforms"] == ["windows"]
    assert values["source"] == "native"
    assert values["source_of"]["native_continuous_apps"] == "native"
    assert values["native_continuous_apps"] == ["zoom"]
    assert values["native_untraced_apps_windows"] == []


def _headline_rows() -> pd.DataFrame:
    """A headline table as apps.headline_table writes it: Webex's and Zoom's profiles measured
    (Zoom's reads not modelled: M2), Webex's own library measured, Teams without a profile, the
    native drivers not run."""
    measured = {"status": "measured", "muted_packets_per_s": 5.0, "sessions": 1}
    rows = [
        {"app": "webex", "app_name": "Cisco Webex", "source": "testbed-profile",
         "measured_as": "model webex-2021 of the app's published behaviour, not the app",
         "muted_read_share_os": 1.0, "muted_read_share_app": 0.98, "reads_modelled": "yes",
         "audio_derived_data_leaving": "yes", **measured},
        {"app": "webex", "app_name": "Cisco Webex", "source": "sdk", "mute_mode": "sdk",
         "measured_as": "the vendor's own library, not the app: the media layer ...",
         "client_code": "@webex/media-helpers 3.12.0; @webex/internal-media-core 2.23.1",
         "muted_read_share_os": 0.5, "muted_read_share_app": 0.5, "reads_modelled": "yes",
         "audio_derived_data_leaving": "no", **measured},
        {"app": "zoom", "app_name": "Zoom", "source": "testbed-profile",
         "measured_as": "model zoom-native of the app's published behaviour, not the app",
         "muted_read_share_os": 1.0, "muted_read_share_app": 0.97,
         "reads_modelled": "no: " + apps.UNMODELLED["M2"],
         "audio_derived_data_leaving": "no", **measured},
        {"app": "teams", "app_name": "Microsoft Teams / Skype", "source": "testbed-profile",
         "measured_as": "none", "status": "no profile: the paper could not determine this"},
        {"app": "zoom", "app_name": "Zoom", "source": "native", "measured_as": "native-windows",
         "status": "not run: needs a Windows host with the app installed and an account"},
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=apps.HEADLINE_COLUMNS)


def test_the_ten_app_figure_marks_reads_a_profile_cannot_model(tmp_path: Path, monkeypatch):
    """Zoom's profile reads every sample (a Chromium page cannot read flags only): its read
    share is marked "behaviour not modelled", not drawn as a measurement; the vendor's own
    library gets a line of its own under its app's model, labelled with its package; the
    footer's source is that of the rows drawn and names the sources that did not run."""
    import math

    from reallymuted.figures import apps as apps_figure
    from reallymuted.figures import save, saved_source

    drawn = {}

    def keep(fig, outputs):
        drawn["fig"] = fig
        save(fig, outputs)

    monkeypatch.setattr(apps_figure, "save", keep)
    apps_figure.plot_headline(_headline_rows(), [tmp_path / "apps.png"])
    reads = drawn["fig"].axes[0]
    widths = [bar.get_width() for bar in reads.patches]  # OS then app witness, per line
    assert widths[:2] == [1.0, 0.5] and math.isnan(widths[2])  # webex model, sdk; zoom not
    labels = [t.get_text() for t in reads.get_yticklabels()]
    assert labels[1] == "Cisco Webex: sdk, mode sdk\n(@webex/media-helpers 3.12.0)"
    texts = [t.get_text() for t in reads.texts]
    why = "M2, buffer flags only: a Chromium page reads every sample"
    assert f"behaviour not modelled\n({why})" in texts
    footer = drawn["fig"].texts[-1].get_text()
    assert footer.startswith("source: sdk, testbed-profile; models and vendor libraries, not")
    assert "native: not run" in footer
    assert saved_source(tmp_path / "apps.png") == "source: sdk, testbed-profile"
