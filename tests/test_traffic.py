"""Traffic statistics per mute state, on the tiny recorded capture."""

from __future__ import annotations

from pathlib import Path

import pytest

from reallymuted import extract, traffic

# the capture switches from "unmuted" to "muted" packets after RTP seq 49 (t ≈ 1.0 s)
SEGMENTS = [extract.Segment("unmuted", 0.0, 1.004), extract.Segment("muted", 1.004, 2.02)]


@pytest.fixture(scope="module")
def packets(repo_root: Path):
    pcap = repo_root / "tests/data/extract/rtp_levels.pcapng"
    first = float(extract.run_tshark(pcap).split(b"\t", 1)[0])
    table = extract.read_packets(pcap, start_epoch=first, client_ports={41000})
    table["state"] = extract.label_states(table.t, SEGMENTS)
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
