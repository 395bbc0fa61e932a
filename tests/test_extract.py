"""Packet and microphone-trace extraction on a tiny capture recorded with tshark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reallymuted.analysis import evidence, extract
from reallymuted.io import DataError


@pytest.fixture(scope="module")
def packets(test_data_dir: Path):
    pcap = test_data_dir / "extract/rtp_levels.pcapng"
    first = float(extract.run_tshark(pcap).split(b"\t", 1)[0])
    return extract.read_packets(pcap, start_epoch=first, client_ports={41000})


@pytest.fixture(scope="module")
def test_data_dir(repo_root: Path) -> Path:
    return repo_root / "tests/data"


def test_rtp_packets_and_directions(packets) -> None:
    sent_rtp = packets[(packets.direction == "sent") & (packets.protocol == "rtp")]
    assert len(sent_rtp) == 100
    assert sent_rtp.rtp_seq.tolist() == list(range(100))
    assert (sent_rtp.payload_len == 12 + 8 + 160).all()
    received = packets[packets.direction == "received"]
    assert len(received) == 4 and (received.protocol != "rtp").all()


def test_audio_level_header_extension_is_decoded(packets) -> None:
    rtp = packets[packets.protocol == "rtp"]
    assert (rtp.audio_level_dbov.iloc[:50] == -30).all()
    assert (rtp.audio_level_dbov.iloc[50:] == -127).all()
    assert (rtp.voice_activity == 1).all()


def test_g711_payload_rms_shows_the_silence(packets) -> None:
    rtp = packets[packets.protocol == "rtp"]
    assert (rtp.payload_rms.iloc[:50] > 1000).all()
    # mu-law 0xFF decodes to 0: digital silence
    assert (rtp.payload_rms.iloc[50:] == 0).all()


def test_http_post_is_named(packets) -> None:
    posts = packets[packets.http_method == "POST"]
    assert posts.http_uri.tolist() == ["/metrics"]
    assert posts.protocol.iloc[0] == "http"


def test_times_are_relative_to_the_session_start(packets) -> None:
    assert packets.t.iloc[0] == 0
    rtp = packets[packets.protocol == "rtp"]
    assert np.median(np.diff(rtp.t)) == pytest.approx(0.02, abs=0.003)


def test_g711_tables_match_known_values() -> None:
    # G.711: mu-law 0x00 -> -32124, 0x80 -> +32124, 0xFF/0x7F -> 0; A-law 0xD5 -> +8
    assert extract.G711["pcmu"][0x00] == -32124 and extract.G711["pcmu"][0x80] == 32124
    assert extract.G711["pcmu"][0xFF] == 0 and extract.G711["pcmu"][0x7F] == 0
    assert extract.G711["pcma"][0xD5] == 8


def test_missing_capture_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nothing\.pcapng: capture file missing"):
        extract.read_packets(tmp_path / "nothing.pcapng", start_epoch=0)


def test_truncated_capture_keeps_complete_packets(test_data_dir: Path, tmp_path: Path) -> None:
    data = (test_data_dir / "extract/rtp_levels.pcapng").read_bytes()
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(data[: len(data) // 2 + 7])
    table = extract.read_packets(cut, start_epoch=0)
    assert 30 < len(table) < 105


def test_mute_segments_and_labels() -> None:
    events = [
        {"t": 0.5, "event": "join"},
        {"t": 2.0, "event": "mute"},
        {"t": 2.1, "event": "mute"},  # a repeated mute changes nothing
        {"t": 5.0, "event": "unmute"},
        {"t": 7.0, "event": "leave"},
    ]
    segments = evidence.mute_segments(events)
    assert segments == [
        evidence.Segment("unmuted", 0.5, 2.0),
        evidence.Segment("muted", 2.0, 5.0),
        evidence.Segment("unmuted", 5.0, 7.0),
    ]
    import pandas as pd

    states = evidence.label_states(pd.Series([0.1, 1.0, 3.0, 6.0, 8.0]), segments)
    assert states.tolist() == ["outside", "unmuted", "muted", "unmuted", "outside"]


def test_mic_trace_witnesses(tmp_path: Path) -> None:
    trace = tmp_path / "mic_trace.jsonl"
    lines = [
        {"t": 0.02, "api": "os:pipe-source", "bytes": 1920, "dropped": 0, "peak": 0.5, "rms": 0.2},
        {"t": 0.03, "api": "pa_stream_peek", "pid": 7, "tid": 8, "bytes": 960, "peak": 0.5},
    ]
    trace.write_text("".join(json.dumps(x) + "\n" for x in lines))
    table = extract.read_mic_trace(trace)
    assert table.witness.tolist() == ["os", "app"]
    trace.write_text('{"t": 1, "api": "x"}\nnot json\n')
    with pytest.raises(DataError, match=r"mic_trace\.jsonl:2"):
        extract.read_mic_trace(trace)


def test_host_agent_calls_are_not_counted_as_reads(tmp_path: Path) -> None:
    trace = tmp_path / "mic_trace.jsonl"
    lines = [
        {"t": 0.1, "api": "wasapi:Start", "kind": "call", "pid": 1, "tid": 1},
        {"t": 0.2, "api": "wasapi:GetBuffer", "kind": "read", "pid": 1, "tid": 1, "frames": 480},
        {"t": 0.2, "api": "wasapi:ReleaseBuffer", "kind": "call", "pid": 1, "tid": 1},
    ]
    trace.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert extract.read_mic_trace(trace).api.tolist() == ["wasapi:GetBuffer"]
