"""Testbed profiles: each app's published mute behaviour, measured by the real instrument.

What each profile must show is known in advance (PAPER.md M1-M3, T1; see
``reallymuted.testbed.drivers.profile``), so the tests read only the published evidence and the
study's own analysis of it: ``webex-2021`` keeps reading the microphone while muted and posts
one record per interval whose decoded gains follow the stimulus; the capture and the
collector hold the same records; ``zoom-native``, ``native-flags-only`` and
``webrtc-soft-mute`` post nothing and send no audio-derived data while muted.

Unit tests (no marker) cover the collector on loopback, the record format, the gain model,
the stimulus, the configuration and the recorded sample in ``tests/data/profiles``; the
sessions themselves are ``testbed`` (root, daemons; about 25 s each).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from reallymuted.analysis import evidence, extract, telemetry
from reallymuted.analysis.telemetry import gainmodel, witnesses
from reallymuted.analysis.telemetry import sessions as ts
from reallymuted.io import DataError, read_jsonl
from reallymuted.paths import EVIDENCE, MANIFEST
from reallymuted.study import matrix
from reallymuted.testbed.contract import apps_with_evidence, evidence_files
from reallymuted.testbed.drivers import get_driver
from reallymuted.testbed.spec import SessionSpec
from reallymuted.testbed.stimuli import make_stimulus
from reallymuted.testbed.summary import summarise
from reallymuted.testbed.supervisor import run_session

SAMPLE = Path(__file__).resolve().parent / "data/profiles/webex-2021/app-steps/rep1"
LEVELS_DB = [-6, -46, -16, -36, -26]


# --- the collector, on loopback --------------------------------------------------------


@pytest.fixture
def running_collector(tmp_path: Path):
    """The collector as the driver runs it (its own process), on a free port."""
    out = tmp_path / "collector.jsonl"
    argv = [sys.executable, "-m", "reallymuted.testbed.collector", "--port", "0", "--out", str(out)]
    proc = subprocess.Popen([*argv, "--t0", repr(time.monotonic())])
    deadline = time.monotonic() + 10
    while not (out.exists() and out.read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline, "collector did not start"
        time.sleep(0.02)
    port = json.loads(out.read_text().splitlines()[0])["port"]
    yield proc, out, f"http://127.0.0.1:{port}"
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _request(url: str, method: str, body: bytes | None = None, **headers: str) -> int:
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_collector_logs_every_request_whole(running_collector) -> None:
    proc, out, base = running_collector
    record = telemetry.encode_wmequality(
        [{"audioMaxGain": 90, "audioMeanGain": 61, "audioMinGain": 14}], "2026-01-02T03:04:05.000Z"
    )
    body = json.dumps(record).encode()
    assert _request(base + "/wmequality", "OPTIONS") == 204
    assert _request(base + "/wmequality", "POST", body, **{"Content-Type": "application/json"})
    binary = bytes(range(256))
    assert _request(base + "/raw", "POST", binary) == 200
    assert _request(base + "/nothing", "GET") == 404
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    rows = evidence.read_log(out)
    assert [r["event"] for r in rows] == ["listening", *["request"] * 4, "stopped"]
    assert [r["method"] for r in rows[1:5]] == ["OPTIONS", "POST", "POST", "GET"]
    assert rows[-1]["requests"] == 4
    assert [r["t"] for r in rows] == sorted(r["t"] for r in rows), "one clock, in order"
    post = rows[2]
    assert post["path"] == "/wmequality" and post["bytes"] == len(body) and post["status"] == 200
    assert ["Content-Type", "application/json"] in post["headers"]
    assert post["client"].startswith("127.0.0.1:")
    # What the collector logged decodes to exactly what was sent; binary bodies survive too.
    report = telemetry.decode_bytes(evidence.request_body(post), "collector")
    assert [
        (r["audio_max_gain"], r["audio_mean_gain"], r["audio_min_gain"]) for r in report.rows
    ] == [(90, 61, 14)]
    assert "body_b64" in rows[3] and evidence.request_body(rows[3]) == binary


def test_collector_reads_chunked_bodies(running_collector) -> None:
    proc, out, base = running_collector
    host, port = base.removeprefix("http://").split(":")
    import http.client

    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.putrequest("POST", "/wmequality")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for part in (b'{"tele', b'metrics": []}'):
        conn.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
    conn.send(b"0\r\n\r\n")
    assert conn.getresponse().status == 200
    conn.close()
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    (post,) = [r for r in evidence.read_log(out) if r["event"] == "request"]
    assert post["body"] == '{"telemetrics": []}'


# --- format, model, stimulus, configuration --------------------------------------------


def test_the_gain_model_is_monotone_and_on_the_papers_scale() -> None:
    rms = np.array([0.0, 1e-9, 1e-5, 0.001, 0.01, 0.5 / np.sqrt(2), 1 / np.sqrt(2), 1.0, 2.0])
    gains = gainmodel.frame_gain(rms)
    assert gains.tolist() == [0, 0, 0, 40, 60, 91, 97, 100, 100]
    fine = gainmodel.frame_gain(np.logspace(-6, 0, 500))
    assert (np.diff(fine) >= 0).all() and fine.min() >= 0 and fine.max() <= 100
    # halves round up, as the page's Math.round does
    assert gainmodel.frame_gain(10 ** (-39.5 / 20)).item() == 61


def test_a_frame_holds_a_gap_from_one_ms_of_digital_silence() -> None:
    rate = 48000  # 10 ms frames of 480 samples; a gap is a zero run of 48
    samples = np.random.default_rng(1).uniform(0.01, 0.1, rate // 5)  # no zero of its own
    samples[1000:1047] = 0  # 47 zeros: too short
    samples[2000:2048] = 0  # 48 zeros inside frame 4
    samples[4780:4840] = 0  # 60 zeros from frame 9 into 10: 1 ms is reached in frame 10
    assert np.flatnonzero(gainmodel.frame_gaps(samples, rate)).tolist() == [4, 10]
    assert not gainmodel.frame_gaps(samples[:479], rate).size, "no whole frame, no verdict"
    assert gainmodel.frame_gaps(np.zeros(960), rate).tolist() == [True, True]


def test_steps_stimulus_holds_each_level_for_a_step(tmp_path: Path) -> None:
    import soundfile as sf

    spec = {"kind": "steps", "levels_db": LEVELS_DB, "step_s": 0.5, "freq_hz": 440}
    make_stimulus(spec, tmp_path / "steps.wav")
    y, rate = sf.read(str(tmp_path / "steps.wav"))
    assert rate == 48000 and len(y) == 5 * 24000
    peaks = [np.abs(y[k * 24000 : (k + 1) * 24000]).max() for k in range(5)]
    assert 20 * np.log10(peaks) == pytest.approx(LEVELS_DB, abs=0.1)
    with pytest.raises(ValueError, match="<= 0 dB"):
        make_stimulus({**spec, "levels_db": [3]}, tmp_path / "bad.wav")


def test_profiles_are_configured_and_checked(repo_root: Path) -> None:
    from reallymuted.config import load_yaml, validate_config

    config = validate_config(
        load_yaml(repo_root / "config.yaml"), repo_root / "workflow/schemas/config.schema.yaml"
    )
    sessions = config["sessions"]
    with_collector = apps_with_evidence(sessions, "collector.jsonl")
    sdk_apps = ["sdk-webex", "sdk-whereby", "sdk-zoom", "sdk-livekit", "sdk-twilio"]
    assert with_collector == [
        "webex-2021",
        "zoom-native",
        "native-flags-only",
        "webrtc-soft-mute",
        "webex-2021-guarded",  # the same profile with the OS-level mute (docs/guard.md)
        "sdk-webex-guarded",  # Webex's library with the OS-level mute
        *sdk_apps,  # the vendors' libraries: their pages' requests go to the collector
        "attack-webex",  # the attack's webex-2021 sessions (stage attack)
        "attack-webex-guarded",  # ... and with the OS-level mute
    ]
    runs = matrix(sessions)
    assert ("webex-2021", "app", "steps", 1) in runs
    assert [r for r in runs if r[2] == "steps"] == [("webex-2021", "app", "steps", 1)]
    driver = get_driver("profile")
    assert driver.source == "testbed-profile" and get_driver("chromium").source == "testbed"
    assert evidence_files("profile") == (*EVIDENCE, "collector.jsonl")
    assert evidence_files("chromium") == EVIDENCE
    with pytest.raises(ValueError, match="profile="):
        driver.check("app", {"profile": "teams"})
    with pytest.raises(ValueError, match="applies to"):
        driver.check("app", {"profile": "zoom-native", "telemetry_interval_s": 3})
    with pytest.raises(ValueError, match="> 0"):
        driver.check("app", {"profile": "webex-2021", "telemetry_interval_s": 0})
    sessions["stimuli"]["steps"]["apps"] = ["webex-2022"]
    with pytest.raises(ValueError, match="webex-2022"):
        matrix(sessions)


def test_a_record_round_trips_through_the_decoder() -> None:
    """The page's record shape (copied from the recorded sample) decodes like the encoder's."""
    post = next(
        r
        for r in evidence.read_log(SAMPLE / "collector.jsonl")
        if r["event"] == "request" and r["method"] == "POST"
    )
    rows, problems = witnesses.decode_body(evidence.request_body(post), "sample")
    assert problems == [] and len(rows) == 1
    (row,) = rows
    payload, _ = telemetry.decode_gzipb64(
        json.loads(post["body"])["telemetrics"][0]["v"]["gzipb64data"]
    )
    ours = telemetry.wmequality_payload(
        [{k: row[k] for k in telemetry.GAIN_COLUMNS}],
        row["start_time"],
        end_time=row["end_time"],
        first_interval_number=row["interval"],
        packets_per_second=row["capture_packets_per_second"],
    )

    # same structure as the encoder's (the payload the authors released): same keys throughout
    def shape(value: object) -> object:
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shape(v) for v in value]
        return type(value).__name__

    assert shape(payload["event"]["intervals"]) == shape(ours["event"]["intervals"])
    assert set(payload) == set(ours) and set(payload["event"]) == set(ours["event"])
    assert row["audio_max_volume"] == row["audio_min_volume"] == telemetry.DEFAULT_VOLUME


# --- the recorded sample (tests/data/profiles, see its README) --------------------------


@pytest.fixture(scope="module")
def sample_tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    extract.extract_session(SAMPLE, out / "packets.parquet", out / "reads.parquet")
    return out


def test_sample_capture_and_collector_agree_record_for_record(sample_tables: Path) -> None:
    table, check = ts.session_telemetry(SAMPLE, sample_tables / "packets.parquet")
    manifest = json.loads((SAMPLE / MANIFEST).read_text())
    assert manifest["source"] == "testbed-profile" and manifest["witness_files"]["collector.jsonl"]
    assert check["match"] and check["mismatches"] == ""
    assert check["posts_pcap"] == check["posts_collector"] == check["expected_records"] == 5
    assert check["records_as_expected"]
    assert table.match.all() and table.frame.notna().all() and table.collector_line.notna().all()
    assert list(table.interval) == [1, 2, 3, 4, 5]
    assert (table.t > table.interval_end_t).all(), "each record is posted after its interval"
    # the frame's time is when the collector logged it, give or take loopback latency
    assert (table.t - table.collector_t).abs().max() < 0.05


def test_sample_gains_follow_the_stimulus(sample_tables: Path) -> None:
    table, check = ts.session_telemetry(SAMPLE, sample_tables / "packets.parquet")
    assert check["gain_r"] > 0.9
    for column in telemetry.GAIN_COLUMNS:
        assert table[column].between(0, 100).all()
    assert (table.audio_mean_gain.astype(float) - table.model_mean_gain).abs().max() <= 3
    assert set(table.capture_packets_per_second) <= set(range(90, 111))


def _copy_sample(tmp_path: Path) -> Path:
    copy = tmp_path / "session"
    shutil.copytree(SAMPLE, copy)
    return copy


def test_a_record_missing_from_the_collector_is_reported(sample_tables, tmp_path) -> None:
    session = _copy_sample(tmp_path)
    lines = (session / "collector.jsonl").read_text().splitlines()
    posts = [i for i, line in enumerate(lines) if json.loads(line).get("method") == "POST"]
    del lines[posts[1]]
    (session / "collector.jsonl").write_text("\n".join(lines) + "\n")
    table, check = ts.session_telemetry(session, sample_tables / "packets.parquet")
    assert not check["match"] and check["records_matched"] == 4
    assert "record 2: in the capture only" in check["mismatches"]
    row = table[table.record == 2].iloc[0]
    assert not row.match and np.isnan(row.collector_line) and row.frame > 0


def test_an_altered_record_is_reported_not_hidden(sample_tables, tmp_path) -> None:
    """A collector body that differs from the wire: both versions stay in the table."""
    session = _copy_sample(tmp_path)
    rows = [json.loads(line) for line in (session / "collector.jsonl").read_text().splitlines()]
    post = next(r for r in rows if r.get("method") == "POST")
    wrapper = json.loads(post["body"])
    payload, _ = telemetry.decode_gzipb64(wrapper["telemetrics"][0]["v"]["gzipb64data"])
    payload["event"]["intervals"][0]["audioTransmit"][0]["levels"]["audioMeanGain"] += 7
    wrapper["telemetrics"][0]["v"]["gzipb64data"] = telemetry.gzip_b64(payload)
    post["body"] = json.dumps(wrapper)
    post["bytes"] = len(post["body"])
    post["sha256"] = hashlib.sha256(post["body"].encode()).hexdigest()
    (session / "collector.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table, check = ts.session_telemetry(session, sample_tables / "packets.parquet")
    assert not check["match"]
    assert "record 1: in the capture only" in check["mismatches"]
    assert "in the collector's log only" in check["mismatches"]
    assert len(table) == 6 and (~table.match).sum() == 2


# --- each profile through the real session runner ---------------------------------------

PHASES = [("unmuted", 3.0), ("muted", 6.0), ("unmuted", 2.5)]


def profile_spec(app: str, stimulus: Path, **options: object) -> SessionSpec:
    return SessionSpec(
        app=app,
        driver="profile",
        mode="app",
        stimulus=stimulus.stem,
        stimulus_path=str(stimulus),
        rep=1,
        schedule=[{"state": s, "seconds": d} for s, d in PHASES],
        options={"profile": app, **options},
        lead_s=0.5,
        tail_s=0.5,
    )


@pytest.fixture(scope="module")
def stimuli(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("stimuli")
    make_stimulus({"kind": "steps", "levels_db": LEVELS_DB, "step_s": 1.5}, folder / "steps.wav")
    make_stimulus({"kind": "tone", "seconds": 5, "level": 0.5}, folder / "tone.wav")
    return {"steps": folder / "steps.wav", "tone": folder / "tone.wav"}


def _run(spec: SessionSpec, out: Path) -> dict:
    """Run one session and the workflow's own per-session analyses of it."""
    manifest = run_session(spec, out)
    assert manifest["status"] == "ok", manifest["failure"]
    extract.extract_session(out, out.parent / "packets.parquet", out.parent / "reads.parquet")
    table, check = ts.session_telemetry(out, out.parent / "packets.parquet")
    return {
        "out": out,
        "manifest": manifest,
        "table": table,
        "check": check,
        "summary": summarise(out),
    }


@pytest.fixture(scope="module")
def webex(stimuli, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("webex") / "session"
    return _run(profile_spec("webex-2021", stimuli["steps"], telemetry_interval_s=1.5), out)


@pytest.fixture(scope="module", params=["zoom-native", "native-flags-only", "webrtc-soft-mute"])
def quiet(request, stimuli, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp(request.param) / "session"
    return {"app": request.param, **_run(profile_spec(request.param, stimuli["tone"]), out)}


def muted_phase(result: dict) -> dict:
    return next(p for p in result["summary"]["phases"] if p["state"] == "muted")


def assert_mic_read_throughout(result: dict) -> None:
    """Both witnesses: the microphone is read in every joined phase, muted included."""
    for phase in result["summary"]["phases"]:
        if phase["state"] in ("unmuted", "muted"):
            assert phase["os_read_fraction"] > 0.9, phase
            assert phase["app_reads_per_s"] > 40, phase


@pytest.mark.testbed
def test_webex_profile_reads_while_muted_and_posts_every_interval(webex: dict) -> None:
    manifest, check = webex["manifest"], webex["check"]
    assert manifest["source"] == "testbed-profile"
    assert manifest["witness_files"] == {n: True for n in (*EVIDENCE, "collector.jsonl")}
    assert_mic_read_throughout(webex)
    assert muted_phase(webex)["rtp_pkts_per_s"] == 0.0, "muted: no audio RTP at all"
    # one record per interval from the meter's start to leave, about duration / interval
    assert check["records_as_expected"], check
    assert 5 <= check["posts_pcap"] <= 7
    assert check["intervals_muted"] >= 2 and check["muted_posts"] >= 3
    assert check["record_spacing_s_median"] == pytest.approx(1.5, abs=0.05)
    assert check["capture_packets_per_second"] and all(
        85 <= v <= 115 for v in check["capture_packets_per_second"]
    )
    assert check["volumes"] == [telemetry.DEFAULT_VOLUME]
    assert check["audio_derived_muted"]


@pytest.mark.testbed
def test_webex_capture_and_collector_hold_the_same_records(webex: dict) -> None:
    check, table = webex["check"], webex["table"]
    assert check["match"], check["mismatches"]
    assert check["posts_pcap"] == check["posts_collector"] == check["records_matched"]
    assert table.frame.is_unique and table.collector_line.is_unique


@pytest.mark.testbed
def test_webex_gains_follow_the_stimulus_level(webex: dict) -> None:
    table = webex["table"]
    assert webex["check"]["gain_r"] > 0.9
    assert table.stimulus_dbfs.max() - table.stimulus_dbfs.min() > 10, "levels really changed"
    for column in telemetry.GAIN_COLUMNS:
        assert table[column].between(0, 100).all()
    assert (table.audio_max_gain >= table.audio_mean_gain).all()
    assert (table.audio_mean_gain >= table.audio_min_gain).all()
    # the model, applied to what the OS witness fed in, predicts what the page posted
    assert (table.audio_mean_gain.astype(float) - table.model_mean_gain).abs().max() <= 4
    # beside each record the page counted its gapped frames (at most every frame)
    assert table.page_gap_frames.notna().all()
    assert table.page_gap_frames.between(0, 200).all()


@pytest.mark.testbed
def test_quiet_profiles_send_nothing_audio_derived_while_muted(quiet: dict) -> None:
    app, check = quiet["app"], quiet["check"]
    assert quiet["manifest"]["source"] == "testbed-profile"
    assert_mic_read_throughout(quiet)
    # nothing posted: neither the capture nor the collector saw a request
    assert check["posts_pcap"] == check["posts_collector"] == check["requests_collector"] == 0
    assert check["match"] and quiet["table"].empty and not check["audio_derived_muted"]
    rate = muted_phase(quiet)["rtp_pkts_per_s"]
    if app == "webrtc-soft-mute":
        assert 45 <= rate <= 55 and check["muted_rtp_levels_dbov"] == [ts.SILENCE_DBOV]
    else:
        assert rate == 0.0 and check["muted_rtp_levels_dbov"] == []
    events = read_jsonl(quiet["out"] / "events.jsonl")
    shown = [e for e in events if e["event"] == "page_notice_shown"]
    if app == "zoom-native":
        (mute,) = [e["t"] for e in events if e["event"] == "mute"]
        (unmute,) = [e["t"] for e in events if e["event"] == "unmute"]
        assert shown and all(mute <= e["t"] < unmute for e in shown), "notice only while muted"
    else:
        assert not shown


def test_a_crash_pyshark_reports_at_close_keeps_the_posts_only_if_tshark_lists_them() -> None:
    """pyshark's close can report tshark crashed when its child watcher missed the exit; the
    posts already read are kept only when tshark, asked again, lists exactly their frames."""
    port = json.loads((SAMPLE / MANIFEST).read_text())["client"]["server_ports"][0]
    posts = witnesses.pcap_posts(SAMPLE / "traffic.pcapng", port)
    assert len(posts) == 5
    crash = RuntimeError("TShark seems to have crashed (retcode: 255)")
    flt = f'tcp.dstport == {port} && http.request.method == "POST"'
    witnesses._check_crash(crash, SAMPLE / "traffic.pcapng", port, flt, posts)  # all read: kept
    with pytest.raises(DataError, match="tshark failed while reading the POSTs"):
        witnesses._check_crash(crash, SAMPLE / "traffic.pcapng", port, flt, posts[:-1])
