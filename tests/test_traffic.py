"""Traffic statistics per mute state, on the tiny recorded capture."""

from __future__ import annotations

from pathlib import Path

import pytest

from reallymuted.analysis import evidence, extract, leakage, traffic

# the capture switches from "unmuted" to "muted" packets after RTP seq 49 (t ≈ 1.0 s)
SEGMENTS = [evidence.Segment("unmuted", 0.0, 1.004), evidence.Segment("muted", 1.004, 2.02)]


@pytest.fixture(scope="module")
def packets(repo_root: Path):
    pcap = repo_root / "tests/data/extract/rtp_levels.pcapng"
    first = float(extract.run_tshark(pcap).split(b"\t", 1)[0])
    table = extract.read_packets(pcap, start_epoch=first, client_ports={41000})
    table["state"] = evidence.label_states(table.t, SEGMENTS)
    return table


def test_per_state_rates_and_levels(packets) -> None:
    stats = traffic.state_traffic_stats(packets, SEGMENTS).set_index("state")
    assert stats.loc["unmuted", "rtp_packets_per_s"] == pytest.approx(50, rel=0.05)
    assert stats.loc["muted", "rtp_packets_per_s"] == pytest.approx(50, rel=0.05)
    assert stats.loc["unmuted", "rtp_payload_mean"] == 180
    assert stats.loc["unmuted", "audio_level_median_dbov"] == -30
    assert stats.loc["muted", "audio_level_median_dbov"] == -127
    assert stats.loc["muted", "payload_rms_mean"] == 0
    assert stats.loc["unmuted", "payload_rms_mean"] > 1000


def test_flows(packets) -> None:
    table = traffic.flows(packets).set_index("protocol")
    assert table.loc["rtp", "packets"] == 100
    assert table.loc["rtp", "dport"] == 41002
    assert table.loc["rtp", "states"] == "muted+unmuted"
    assert not table.loc["rtp", "muted_only"]


def test_window_features_on_a_recorded_soft_mute(repo_root: Path, tmp_path: Path) -> None:
    from reallymuted.io import read_jsonl

    session = repo_root / "tests/data/sessions/chromium/soft-tone/rep1"
    extract.extract_session(session, tmp_path / "p.parquet", tmp_path / "r.parquet")
    import pandas as pd

    table = pd.read_parquet(tmp_path / "p.parquet")
    segments = evidence.mute_segments(read_jsonl(session / "events.jsonl"))
    features = leakage.window_features(table, segments, window_s=0.5)
    muted = next(s for s in segments if s.state == "muted")
    assert len(features) == int((muted.end - muted.start) // 0.5)
    # soft mute: about 25 RTP packets per half second (plus RTCP/STUN), the smallest being the
    # same silent frame in every window
    assert features.packets.between(20, 35).all()
    assert features.size_min.nunique() == 1


def _windows(leaky: bool, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows, labels, groups = [], [], []
    for activity in range(3):
        for recording in range(4):
            for _ in range(10):
                size = 60 + (20 * activity if leaky else 0) + rng.normal(0, 3)
                rows.append(
                    {f: rng.normal() for f in leakage.WINDOW_FEATURES} | {"size_mean": size}
                )
                labels.append(f"a{activity}")
                groups.append(f"a{activity}-r{recording}")
    return pd.DataFrame(rows), pd.Series(labels), pd.Series(groups)


def test_leakage_found_when_sizes_follow_the_activity() -> None:
    result = leakage.leakage_test(*_windows(leaky=True), seed=1, bootstrap=300, permutations=39)
    assert result["accuracy"] > 0.9
    assert result["ci_low"] > result["chance_high"] and result["p_value"] == 1 / 40
    assert result["verdict"] == "leaks: above chance"


def test_no_leakage_claimed_from_noise() -> None:
    result = leakage.leakage_test(*_windows(leaky=False), seed=1, bootstrap=300, permutations=39)
    assert result["verdict"] == "no evidence of leakage"
    assert result["ci_low"] <= 1 / 3 + 0.05
    assert result["p_value"] >= 0.05
    # measured chance sits below 1/3 on three balanced activities: leaving a recording out
    # makes its activity the training folds' minority, for shuffled labels as for real ones
    assert 0.1 < result["chance"] < 1 / 3
    assert result["accuracy"] <= result["chance_high"]
