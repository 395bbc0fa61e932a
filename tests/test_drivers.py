"""The real clients through the real session runner: Chromium (WebRTC) and baresip (SIP/RTP).

Each test runs one short session and checks, from the published evidence only, what these
clients are known to do (shared/notes/real-clients.md): Chromium's soft mute keeps reading
the microphone and keeps sending RTP, ``stop`` releases the microphone and sends nothing;
baresip keeps reading and sending 50 packets/s while muted, with PCMU silence on the wire.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reallymuted.io import read_jsonl
from reallymuted.paths import FAILED, MANIFEST
from reallymuted.testbed import capture, netns
from reallymuted.testbed.drivers import get_driver
from reallymuted.testbed.spec import SessionSpec
from reallymuted.testbed.stimuli import make_stimulus
from reallymuted.testbed.summary import summarise
from reallymuted.testbed.supervisor import run_session

PHASES = [{"state": "unmuted", "seconds": 3}, {"state": "muted", "seconds": 4}]
PHASES.append({"state": "unmuted", "seconds": 3})


@pytest.fixture(scope="module")
def tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stimuli") / "tone.wav"
    make_stimulus({"kind": "tone", "seconds": 5, "freq_hz": 440, "level": 0.5}, path)
    return path


def run(tone: Path, out: Path, app: str, driver: str, mode: str, **options) -> dict:
    spec = SessionSpec(
        app=app,
        driver=driver,
        mode=mode,
        stimulus="tone",
        stimulus_path=str(tone),
        rep=1,
        schedule=PHASES,
        options=options,
        lead_s=0.5,
        tail_s=0.5,
    )
    manifest = run_session(spec, out)
    assert manifest["status"] == "ok", manifest["failure"]
    return manifest


def by_state(summary: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for phase in summary["phases"]:
        out.setdefault(phase["state"], []).append(phase)
    return out


def sent_rtp(out: Path, manifest: dict) -> list[dict]:
    ports = set(manifest["client"]["ports"])
    return [p for p in capture.rtp_packets(out / "traffic.pcapng") if p["sport"] in ports]


def test_modes_are_declared_by_each_driver() -> None:
    assert get_driver("chromium").modes == (
        "soft",
        "soft-detector",
        "replace",
        "replace-detector",
        "stop",
        "stop-detector",
    )
    assert get_driver("baresip").modes == ("ctrl",)
    assert get_driver("linphone").modes == ("ctrl",)
    with pytest.raises(ValueError, match="codec"):
        get_driver("baresip").check("ctrl", {"codec": "g729"})


@pytest.mark.testbed
def test_chromium_soft_mute_keeps_reading_and_sending(tone: Path, tmp_path: Path) -> None:
    out = tmp_path / "soft"
    manifest = run(tone, out, "chromium", "chromium", "soft")
    assert manifest["versions"]["app"].startswith("Chromium")
    assert manifest["client"]["ports"] and manifest["client"]["audio_level_ext_id"]
    assert manifest["capture"]["filter"] == "not (tcp port 5037) and not (tcp port 9222)"
    phases = by_state(summarise(out))
    for phase in [*phases["unmuted"], *phases["muted"]]:
        assert phase["os_read_fraction"] > 0.9
        assert phase["app_reads_per_s"] > 40  # pa_stream_peek in the audio service
        assert 45 <= phase["rtp_pkts_per_s"] <= 55
        # Muted or not, the app receives the tone itself: muting happens after capture.
        assert phase["app_peak_max"] > 0.4
    reads = read_jsonl(out / "mic_trace.jsonl")
    assert {r["api"] for r in reads} == {"os:pipe-source", "pulse:pa_stream_peek"}
    # Soft-muted packets carry silence: the RTP packets shrink.
    events = read_jsonl(out / "events.jsonl")
    (mute,) = [e["t"] for e in events if e["event"] == "mute"]
    (unmute,) = [e["t"] for e in events if e["event"] == "unmute"]
    epoch0 = manifest["start_epoch"]
    sizes = {"muted": [], "unmuted": []}
    for packet in sent_rtp(out, manifest):
        t = packet["time"] - epoch0
        if mute + 0.5 < t < unmute:
            sizes["muted"].append(packet["udp_length"])
        elif unmute + 0.5 < t:
            sizes["unmuted"].append(packet["udp_length"])
    mean = {k: sum(v) / len(v) for k, v in sizes.items()}
    assert mean["muted"] < mean["unmuted"] - 20


@pytest.mark.testbed
def test_chromium_stop_releases_the_microphone(tone: Path, tmp_path: Path) -> None:
    out = tmp_path / "stop"
    run(tone, out, "chromium", "chromium", "stop")
    phases = by_state(summarise(out))
    (muted,) = phases["muted"]
    assert muted["os_read_fraction"] == 0.0
    assert muted["app_reads"] == 0
    assert muted["rtp_pkts_per_s"] == 0.0
    for phase in phases["unmuted"]:  # before the mute, and after a new getUserMedia
        assert phase["os_read_fraction"] > 0.9
        assert phase["app_reads_per_s"] > 40
        assert 45 <= phase["rtp_pkts_per_s"] <= 55
    assert (out / "traffic.pcapng").stat().st_size > 10_000


@pytest.mark.testbed
@pytest.mark.parametrize("codec", ["opus", "pcmu"])
def test_baresip_keeps_reading_and_sending_while_muted(
    codec: str, tone: Path, tmp_path: Path
) -> None:
    out = tmp_path / codec
    manifest = run(tone, out, f"baresip-{codec}", "baresip", "ctrl", codec=codec)
    assert manifest["versions"]["app"].startswith("baresip")
    phases = by_state(summarise(out))
    for phase in [*phases["unmuted"], *phases["muted"]]:
        assert phase["os_read_fraction"] > 0.9
        assert 45 <= phase["app_reads_per_s"] <= 55  # one 20 ms snd_pcm_readi each
        assert 45 <= phase["rtp_pkts_per_s"] <= 55
        assert phase["app_peak_max"] > 0.4  # the mute is applied after capture
    reads = read_jsonl(out / "mic_trace.jsonl")
    assert {r["api"] for r in reads} == {"os:pipe-source", "alsa:snd_pcm_readi"}
    events = read_jsonl(out / "events.jsonl")
    assert [e["reply"] for e in events if e["event"] in ("mute", "unmute")] == [
        "call muted",
        "call un-muted",
    ]
    # The call really uses the configured codec: PCMU is payload type 0 with 160-byte frames,
    # Opus a dynamic payload type with variable sizes.
    packets = sent_rtp(out, manifest)
    types = {p["payload_type"] for p in packets}
    sizes = {p["udp_length"] for p in packets}
    if codec == "pcmu":
        assert types == {0} and sizes == {8 + 12 + 160}
    else:
        assert len(types) == 1 and min(types) >= 96 and len(sizes) > 5


@pytest.mark.testbed
def test_linphone_keeps_reading_and_sending_while_muted(tone: Path, tmp_path: Path) -> None:
    out = tmp_path / "linphone"
    manifest = run(tone, out, "linphone", "linphone", "ctrl")
    assert manifest["versions"]["app"].startswith("linphonec")
    phases = by_state(summarise(out))
    for phase in [*phases["unmuted"], *phases["muted"]]:
        assert phase["os_read_fraction"] > 0.9
        assert phase["app_reads_per_s"] > 40  # native PulseAudio: pa_stream_peek
        assert 45 <= phase["rtp_pkts_per_s"] <= 55
        assert phase["app_peak_max"] > 0.4
    # Muted Opus frames are silence: much smaller packets, still 50 per second.
    events = read_jsonl(out / "events.jsonl")
    (mute,) = [e["t"] for e in events if e["event"] == "mute"]
    (unmute,) = [e["t"] for e in events if e["event"] == "unmute"]
    epoch0 = manifest["start_epoch"]
    muted = [
        p["udp_length"] for p in sent_rtp(out, manifest) if mute + 0.5 < p["time"] - epoch0 < unmute
    ]
    unmuted = [
        p["udp_length"] for p in sent_rtp(out, manifest) if p["time"] - epoch0 > unmute + 0.5
    ]
    assert sum(muted) / len(muted) < 0.5 * sum(unmuted) / len(unmuted)


@pytest.mark.testbed
def test_killing_chromium_mid_session_leaves_nothing_behind(tone: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "reallymuted.testbed.supervisor", "run", "--app", "chromium"]
    argv += ["--driver", "chromium", "--mode", "soft", "--stimulus", str(tone)]
    argv += ["--out", str(out), "--log", str(tmp_path / "session.log"), "--lead", "0.3"]
    argv += ["--phase", "unmuted:3", "--phase", "muted:2"]
    cli = subprocess.Popen(argv, stdout=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = out / ".session/status.json"
        if status.exists() and '"schedule"' in status.read_text():
            break
        time.sleep(0.05)
    else:
        cli.terminate()  # the session stops its own daemons on SIGTERM
        cli.communicate(timeout=60)
        failure = (
            json.loads((out / FAILED).read_text())["failure"] if (out / FAILED).exists() else None
        )
        log_tail = (tmp_path / "session.log").read_text()[-3000:]
        pytest.fail(f"the session never reached its schedule: {failure}\n{log_tail}")
    time.sleep(0.5)
    (namespace,) = [n for n in netns.names() if n.startswith(f"{netns.PREFIX}{cli.pid}-")]
    in_namespace = netns.pids(namespace)
    registry = read_jsonl(out / ".session/pids.jsonl")
    browser = next(e["pid"] for e in registry if e["role"] == "client")
    assert len(netns.descendants([browser])) > 3  # Chromium's process tree
    os.kill(browser, signal.SIGKILL)

    cli.communicate(timeout=90)
    assert cli.returncode != 0
    failed = json.loads((out / FAILED).read_text())
    assert failed["failure"]["component"] == "client"
    assert not (out / MANIFEST).exists()
    assert not [pid for pid in in_namespace if netns.alive(pid)]
    assert namespace not in netns.names()
