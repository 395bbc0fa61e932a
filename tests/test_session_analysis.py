"""Per-session analysis on three sessions recorded by the instrument (tests/data/sessions)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from reallymuted.analysis import extract, micpolicy
from reallymuted.figures import sessions as session_figures

# the recorded sessions have a 1.5 s muted phase: a short grace keeps most of it
PARAMS = micpolicy.PolicyParams(grace_s=0.3)
SESSIONS = {
    "control-stops": "control-stops/ctrl-tone/rep1",
    "baresip-pcmu": "baresip-pcmu/ctrl-tone/rep1",
    "chromium-soft": "chromium/soft-tone/rep1",
}


@pytest.fixture(scope="module")
def analysed(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = {}
    for name, relative in SESSIONS.items():
        session = repo_root / "tests/data/sessions" / relative
        work = tmp_path_factory.mktemp(name)
        extract.extract_session(session, work / "packets.parquet", work / "reads.parquet")
        states, policy = micpolicy.analyse_session(
            session, work / "packets.parquet", work / "reads.parquet", PARAMS
        )
        out[name] = (session, work, states.set_index("state"), policy)
    return out


def test_policies_at_both_witnesses(analysed: dict) -> None:
    expected = {
        "control-stops": "stops",
        "baresip-pcmu": "continuous",
        "chromium-soft": "continuous",
    }
    for name, policy in expected.items():
        result = analysed[name][3]
        assert (result["policy_os"], result["policy_app"]) == (policy, policy), name
        assert result["witnesses_agree"]


def test_what_is_sent_while_muted(analysed: dict) -> None:
    baresip = analysed["baresip-pcmu"][2]
    assert baresip.loc["muted", "rtp_packets_per_s"] == pytest.approx(50, rel=0.05)
    assert baresip.loc["muted", "payload_rms_mean"] == 0  # mu-law 0xFF: digital silence
    assert baresip.loc["unmuted", "payload_rms_mean"] > 1000
    chromium = analysed["chromium-soft"][2]
    assert chromium.loc["muted", "rtp_packets_per_s"] == pytest.approx(50, rel=0.1)
    assert chromium.loc["muted", "audio_level_median_dbov"] == -127
    assert chromium.loc["muted", "rtp_payload_mean"] < chromium.loc["unmuted", "rtp_payload_mean"]
    assert analysed["control-stops"][2].loc["muted", "packets_per_s"] == 0


def test_tables_across_sessions(analysed: dict, tmp_path: Path) -> None:
    paths: dict[str, list[str]] = {"states": [], "policy": [], "flows": []}
    for session, work, _, _ in analysed.values():
        per_session = {k: work / f"{k}.out" for k in paths}
        micpolicy.write_session_analysis(
            session, work / "packets.parquet", work / "reads.parquet", per_session, PARAMS
        )
        for key, path in per_session.items():
            paths[key].append(str(path))
    out = {k: tmp_path / f"{k}.out" for k in ("states", "policy", "flows", "values")}
    micpolicy.write_tables(paths["states"], paths["policy"], paths["flows"], out)
    policy = pd.read_csv(out["policy"]).set_index("app")
    assert policy.loc["control-stops", "policy"] == "stops"
    assert set(policy.source) == {"testbed"}
    assert list(policy.columns) == [
        "source",
        "mute_mode",
        "policy",
        "period_s",
        "muted_read_share_os",
        "muted_read_share_app",
        "witnesses_agree",
        "sessions",
    ]
    flows = pd.read_csv(out["flows"])
    assert set(flows.app) == {"baresip-pcmu", "chromium"}  # the control client sends nothing
    assert (flows[flows.protocol == "rtp"].groupby("app").packets.max() > 100).all()
    values = json.loads(out["values"].read_text())
    assert values["policy_baresip_pcmu_ctrl"] == "continuous"
    assert values["muted_audio_level_median_dbov_chromium_soft"] == -127


def test_disagreement_is_written_out() -> None:
    policies = pd.DataFrame(
        [
            {
                "source": "testbed",
                "app": "x",
                "mute_mode": "m",
                "policy_os": "continuous",
                "policy_app": "stops",
                "period_s_os": None,
                "period_s_app": None,
                "muted_read_share_os": 1.0,
                "muted_read_share_app": 0.0,
                "witnesses_agree": False,
            },
        ]
    )
    row = micpolicy.policy_table(policies).iloc[0]
    assert row.policy == "disagree: continuous/stops"
    assert not row.witnesses_agree


def test_timeline_figure(analysed: dict, tmp_path: Path) -> None:
    session, work, _, _ = analysed["chromium-soft"]
    outputs = [tmp_path / "t.png", tmp_path / "t.pdf"]
    session_figures.timeline_from_files(
        session, work / "packets.parquet", work / "reads.parquet", outputs
    )
    assert all(p.stat().st_size > 10_000 for p in outputs)


def test_a_study_where_no_client_sent_anything(analysed: dict, tmp_path: Path) -> None:
    """Only the control client (no network at all): the tables still have their columns."""
    session, work, _, _ = analysed["control-stops"]
    parts = {k: tmp_path / f"{k}.out" for k in ("states", "policy", "flows")}
    micpolicy.write_session_analysis(
        session, work / "packets.parquet", work / "reads.parquet", parts, PARAMS
    )
    out = {k: tmp_path / f"study_{k}" for k in ("states", "policy", "flows", "values")}
    micpolicy.write_tables([parts["states"]], [parts["policy"]], [parts["flows"]], out)
    flows = pd.read_csv(out["flows"])
    assert flows.empty and {"app", "protocol", "dport", "periodic"} <= set(flows.columns)
