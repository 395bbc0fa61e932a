"""The session instrument against known truth.

The control client's mute policy is ours, so what each witness must see is known in advance:
the real session runner (namespace, PulseAudio, paced writer, capture, Frida tracer) runs it
and the assertions read only the published raw evidence. Then failures: a process killed
mid-session must give a non-zero exit, a manifest.failed.json naming the failed step and
component, no evidence files, no surviving process and no namespace.

Unit tests (no marker) cover the pieces that need no root; the rest are ``testbed``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reallymuted import tshark_ports
from reallymuted.analysis import extract
from reallymuted.analysis.evidence import mute_segments
from reallymuted.analysis.micpolicy import PolicyLabel, PolicyParams, label_policy
from reallymuted.io import read_jsonl, sha256_file
from reallymuted.paths import EVIDENCE, FAILED, MANIFEST, session_dir
from reallymuted.study import matrix
from reallymuted.testbed import audio, capture, netns, tracing
from reallymuted.testbed.drivers import check_apps
from reallymuted.testbed.drivers.control import Policy
from reallymuted.testbed.spec import SessionSpec
from reallymuted.testbed.stimuli import make_stimulus
from reallymuted.testbed.summary import phases, summarise
from reallymuted.testbed.supervisor import run_session

OS_API = "os:pipe-source"


# --- helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5 s continuous tone: every 20 ms tick carries signal, so levels are easy to check."""
    path = tmp_path_factory.mktemp("stimuli") / "tone.wav"
    make_stimulus({"kind": "tone", "seconds": 5, "freq_hz": 440, "level": 0.5}, path)
    return path


def control_spec(tone: Path, policy: str, phases_: list[tuple[str, float]], **opts) -> SessionSpec:
    return SessionSpec(
        app=f"control-{policy}",
        driver="control",
        mode="ctrl",
        stimulus="tone",
        stimulus_path=str(tone),
        rep=1,
        schedule=[{"state": s, "seconds": d} for s, d in phases_],
        options={"policy": policy, **opts},
        lead_s=0.5,
        tail_s=0.3,
    )


def evidence(out: Path) -> tuple[dict, list[dict], list[dict], list[dict]]:
    """manifest, events, OS-witness lines, app-witness lines of a published session."""
    manifest = json.loads((out / MANIFEST).read_text())
    events = read_jsonl(out / "events.jsonl")
    reads = read_jsonl(out / "mic_trace.jsonl")
    os_rows = [r for r in reads if r["api"] == OS_API]
    app_rows = [r for r in reads if r["api"] != OS_API]
    return manifest, events, os_rows, app_rows


def event_times(events: list[dict], name: str) -> list[float]:
    return [e["t"] for e in events if e["event"] == name]


def os_read_times(os_rows: list[dict], lo: float, hi: float) -> list[float]:
    """Ticks in [lo, hi) whose bytes PulseAudio accepted (= read)."""
    return [r["t"] for r in os_rows if lo <= r["t"] < hi and r["bytes"] > 0]


def app_read_times(app_rows: list[dict], lo: float, hi: float) -> list[float]:
    return [r["t"] for r in app_rows if lo <= r["t"] < hi]


def classified(out: Path) -> dict[str, PolicyLabel]:
    """The study's own policy label of a session, from each witness (as the workflow does)."""
    reads = extract.read_mic_trace(out / "mic_trace.jsonl")
    segments = mute_segments(read_jsonl(out / "events.jsonl"))
    return {w: label_policy(reads, segments, w, PolicyParams()) for w in ("os", "app")}


def os_fraction(os_rows: list[dict], lo: float, hi: float) -> float:
    """Bytes read / bytes offered in [lo, hi)."""
    rows = [r for r in os_rows if lo <= r["t"] < hi]
    offered = sum(r["bytes"] + r["dropped"] for r in rows)
    return sum(r["bytes"] for r in rows) / offered


def bursts(times: list[float], gap: float = 0.4) -> list[tuple[float, float]]:
    """(start, end) of runs of times with no gap longer than ``gap``."""
    out: list[tuple[float, float]] = []
    for t in times:
        if out and t - out[-1][1] <= gap:
            out[-1] = (out[-1][0], t)
        else:
            out.append((t, t))
    return out


def assert_contract(out: Path, manifest: dict, events: list[dict], tone: Path) -> None:
    """The raw-evidence contract: exactly five files, a complete manifest, one clock."""
    assert sorted(p.name for p in out.iterdir()) == sorted([*EVIDENCE, MANIFEST])
    assert manifest["status"] == "ok" and manifest["exit_status"] == 0
    assert manifest["source"] == "testbed"
    assert manifest["stimulus"]["sha256"] == sha256_file(tone)
    assert set(manifest["versions"]) >= {"app", "os", "tshark", "frida", "python"}
    assert all(manifest["witness_files"].values())
    assert manifest["start"]["epoch"] == manifest["start_epoch"]
    assert manifest["end"]["t"] > 0 and manifest["cleanup"]["netns_removed"]
    times = [e["t"] for e in events]
    assert times == sorted(times), "events.jsonl is on one clock, in order"
    order = [e["event"] for e in events if e["event"] in ("join", "mute", "unmute", "leave")]
    assert order[0] == "join" and order[-1] == "leave"
    for row in read_jsonl(out / "mic_trace.jsonl"):
        assert {"t", "api", "pid", "tid", "peak", "rms"} <= set(row)
        assert "frames" in row or "bytes" in row


# --- unit tests (no root) --------------------------------------------------------------


def test_policy_says_when_the_control_client_reads() -> None:
    periodic = Policy("periodic", read_s=1.0, every_s=3.0)
    assert not periodic.wants_mic(0.0), "nothing before join"
    periodic.joined = True
    assert periodic.wants_mic(0.0)
    periodic.muted_at = 10.0
    wants = [periodic.wants_mic(10.0 + k / 10) for k in range(0, 70)]
    # bursts of 1 s starting 3 s and 6 s after the mute, nothing else
    assert [i for i, w in enumerate(wants) if w] == [*range(30, 40), *range(60, 70)]
    stops = Policy("stops", 1.0, 3.0)
    stops.joined, stops.muted_at = True, 0.0
    assert not stops.wants_mic(5.0)
    with pytest.raises(ValueError, match="read_s < every_s"):
        Policy("periodic", read_s=3.0, every_s=3.0)


def test_tracer_tells_a_sleeping_main_thread_from_a_busy_one() -> None:
    # The tracer attaches only while a process's main thread sleeps in a system call.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)  # past the interpreter's start-up
        assert tracing.main_thread_asleep(sleeper.pid) is True
        assert tracing.main_thread_asleep(spinner.pid) is False
    finally:
        for proc in (sleeper, spinner):
            proc.kill()
            proc.wait()
    assert tracing.main_thread_asleep(sleeper.pid) is None


@pytest.mark.testbed
def test_a_process_that_appears_during_a_slow_attach_is_attached_meanwhile(
    tmp_path: Path,
) -> None:
    # The poll hands each new process to the pool and goes on: a process whose main thread
    # never sleeps holds one attach for its whole idle wait, and a process that appears
    # meanwhile is attached beside it, not after it.
    # the parent starts its child when told to, and says the child's PID
    spawn = (
        "import subprocess, sys, time; sys.stdin.readline(); "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print(c.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", spawn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    tracer = tracing.TreeTracer(
        [parent.pid, spinner.pid],
        time.monotonic(),
        tmp_path / "reads.jsonl",
        tmp_path / "events.jsonl",
        tmp_path / "status.json",
        min_age_s=0.5,
        idle_wait_s=20.0,
    )
    late = None
    try:
        time.sleep(0.6)
        started = time.monotonic()
        first = tracer.attach_new()
        assert time.monotonic() - started < 1.0, "the poll waited for its attaches"
        parent.stdin.write("\n")
        parent.stdin.flush()
        late = int(parent.stdout.readline())
        time.sleep(0.6)
        (second,) = tracer.attach_new()
        assert second.result(timeout=15.0) is True
        assert {parent.pid, late} <= set(tracer.sessions)
        assert spinner.pid not in tracer.sessions, "the spinner's attach is still waiting"
        assert not all(f.done() for f in first)
        covered = json.loads((tmp_path / "status.json").read_text())["covered"]
        assert {parent.pid, late} <= set(covered)
    finally:
        if late is not None:
            os.kill(late, signal.SIGKILL)  # the child the parent started for this test
        for proc in (parent, spinner):
            proc.kill()
            proc.wait()
        tracer.stopping.set()
        tracer.pool.shutdown(wait=True)
        assert tracer.finish()


@pytest.mark.testbed
def test_the_capture_keeps_what_was_sent_just_before_it_is_stopped(tmp_path: Path) -> None:
    # libpcap hands dumpcap its packets in blocks and SIGINT loses the open one: a client's
    # last packets (an RTCP BYE, a beacon on leaving) would be missing. The stop waits first.
    out = tmp_path / "burst.pcapng"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        port = receiver.getsockname()[1]
        argv = capture.capture_command("dumpcap", out, capture_filter=f"udp port {port}")
        dumpcap = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            capture.wait_capture_ready(out, lambda: dumpcap.poll() is None)
            time.sleep(0.5)  # the block opened by the burst is its own
            for k in range(30):
                receiver.sendto(b"burst %d" % k, ("127.0.0.1", port))
            sent = time.monotonic()
            waited = capture.wait_last_block(sent)
        finally:
            dumpcap.send_signal(signal.SIGINT)
            dumpcap.wait(timeout=10)
    assert capture.BLOCK_TIMEOUT_S < waited <= capture.BLOCK_TIMEOUT_S + 0.2
    assert len(extract.read_packets(out, 0)) == 30


# Inside a namespace: the ephemeral range narrowed to 50 ports around two reserved ones, every
# port the kernel hands out for a bind to port 0, over UDP then TCP, until none is left.
BIND_UNTIL_EXHAUSTED = """
import json, socket
open("/proc/sys/net/ipv4/ip_local_port_range", "w").write("34950 34999")
given, kept = {}, []
for kind, name in ((socket.SOCK_DGRAM, "udp"), (socket.SOCK_STREAM, "tcp")):
    given[name] = []
    while True:
        sock = socket.socket(socket.AF_INET, kind)
        try:
            sock.bind(("127.0.0.1", 0))
        except OSError:
            break
        kept.append(sock)
        given[name].append(sock.getsockname()[1])
print(json.dumps(given))
"""


@pytest.mark.testbed
def test_a_namespace_gives_no_client_a_port_tshark_would_misname() -> None:
    # the setting is the namespace's own: the machine's is left as it was
    name = f"{netns.PREFIX}{os.getpid()}-ports"
    host = Path(netns.RESERVED_PORTS).read_text()
    netns.create(name)
    try:
        argv = [*netns.exec_prefix(name), sys.executable, "-c", BIND_UNTIL_EXHAUSTED]
        given = json.loads(subprocess.run(argv, capture_output=True, check=True).stdout)
    finally:
        netns.destroy(name)
    claiming = {*tshark_ports.TCP_CLAIMING_PORTS, *tshark_ports.UDP_CLAIMING_PORTS}
    assert {34962, 34980} <= claiming
    for ports in given.values():
        assert sorted(ports) == [p for p in range(34950, 35000) if p not in claiming]
    assert Path(netns.RESERVED_PORTS).read_text() == host


def test_a_refused_real_time_priority_is_recorded_not_fatal() -> None:
    # The kernel refuses the priority (here: out of range; in a container without
    # CAP_SYS_NICE: EPERM): the process keeps its ordinary scheduler and the refusal is said.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert audio.make_realtime(sleeper.pid, 100) == "SCHED_OTHER (EINVAL)"
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_matrix_and_paths_follow_the_config() -> None:
    sessions = {
        "repetitions": 2,
        "stimuli": {"speech": {}, "tone": {}},
        "apps": {
            "chromium": {"driver": "chromium", "modes": ["soft", "stop-detector"]},
            "control-stops": {"driver": "control", "modes": ["ctrl"], "policy": "stops"},
        },
    }
    runs = matrix(sessions)
    assert len(runs) == (2 + 1) * 2 * 2
    assert ("chromium", "stop-detector", "tone", 2) in runs
    assert session_dir("chromium", "stop-detector", "tone", 2) == (
        "results/raw/chromium/stop-detector-tone/rep2"
    )
    # the structure is the study's; each app's modes are its driver's to check
    sessions["apps"]["chromium"]["modes"] = ["mute-harder"]
    assert ("chromium", "mute-harder", "tone", 2) in matrix(sessions)
    with pytest.raises(ValueError, match=r"sessions\.apps\.chromium: .*mute-harder"):
        check_apps(sessions)


def test_phases_cut_the_timeline_at_each_action() -> None:
    events = [
        {"t": 1.0, "event": "join"},
        {"t": 4.0, "event": "mute"},
        {"t": 9.0, "event": "unmute"},
        {"t": 12.0, "event": "leave"},
        {"t": 13.0, "event": "session_end"},
    ]
    assert [(p["state"], p["start"], p["end"]) for p in phases(events)] == [
        ("before_join", 0.0, 1.0),
        ("unmuted", 1.0, 4.0),
        ("muted", 4.0, 9.0),
        ("unmuted", 9.0, 12.0),
        ("after_leave", 12.0, 13.0),
    ]


def test_stimuli_are_reproducible_48k_mono(tmp_path: Path) -> None:
    import soundfile as sf

    spec = {"kind": "speech", "seconds": 4, "seed": 3, "level": 0.5}
    first = make_stimulus(spec, tmp_path / "a.wav")
    assert make_stimulus(spec, tmp_path / "b.wav") == first
    assert make_stimulus({**spec, "seed": 4}, tmp_path / "c.wav") != first
    info = sf.info(str(tmp_path / "a.wav"))
    assert (info.samplerate, info.channels, info.frames) == (48000, 1, 4 * 48000)


def test_a_bad_schedule_is_refused_before_anything_starts(tone: Path) -> None:
    spec = control_spec(tone, "stops", [("unmuted", 1), ("deaf", 1)])
    with pytest.raises(ValueError, match="bad schedule phase"):
        spec.validate()


# --- recorded samples (tests/data/sessions, see its README) -----------------------------

SAMPLES = Path(__file__).resolve().parent / "data/sessions"


def sample_dirs() -> list[Path]:
    return sorted(SAMPLES.glob("*/*/rep*"))


@pytest.mark.parametrize("out", sample_dirs(), ids=lambda p: str(p.relative_to(SAMPLES)))
def test_recorded_samples_hold_the_contract(out: Path) -> None:
    manifest, events, os_rows, app_rows = evidence(out)
    assert sorted(p.name for p in out.iterdir()) == sorted([*EVIDENCE, MANIFEST])
    app, condition, rep = out.relative_to(SAMPLES).parts
    assert (manifest["app"], manifest["condition"], f"rep{manifest['rep']}") == (
        app,
        condition,
        rep,
    )
    assert manifest["source"] == "testbed" and manifest["status"] == "ok"
    assert [e["t"] for e in events] == sorted(e["t"] for e in events)
    assert [e["event"] for e in events if e["event"] in ("join", "mute", "unmute", "leave")] == [
        "join",
        "mute",
        "unmute",
        "leave",
    ]
    ticks = [r["tick"] for r in os_rows]
    assert ticks == list(range(len(ticks))), "one OS-witness line per writer tick"
    assert app_rows and all(r["pid"] in manifest["counts"]["traced_pids"] for r in app_rows)


def test_samples_show_what_each_client_does_while_muted() -> None:
    summaries = {p.parts[-3]: summarise(p, margin_s=0.3) for p in sample_dirs()}
    muted = {
        app: next(p for p in s["phases"] if p["state"] == "muted") for app, s in summaries.items()
    }
    assert muted["control-stops"]["os_read_fraction"] == 0.0
    assert muted["control-stops"]["app_reads"] == 0
    for app in ("baresip-pcmu", "chromium"):
        assert muted[app]["os_read_fraction"] > 0.9
        assert muted[app]["app_reads_per_s"] > 40
        assert 40 <= muted[app]["rtp_pkts_per_s"] <= 60


def test_samples_feed_the_extraction_stage(tmp_path: Path) -> None:
    """The extract stage reads the raw evidence as published (manifest keys, api values)."""
    import pandas as pd

    from reallymuted.analysis import extract

    out = SAMPLES / "chromium/soft-tone/rep1"
    extract.extract_session(out, tmp_path / "packets.parquet", tmp_path / "reads.parquet")
    packets = pd.read_parquet(tmp_path / "packets.parquet")
    sent = packets[(packets.direction == "sent") & (packets.protocol == "rtp")]
    levels = sent.groupby("state").audio_level_dbov.median()
    assert levels["muted"] == -127 and levels["unmuted"] > -40  # RFC 6464, in clear
    reads = pd.read_parquet(tmp_path / "reads.parquet")
    assert set(reads.witness) == {"os", "app"}


# --- the control client through the real session runner --------------------------------


@pytest.mark.testbed
def test_continuous_policy_reads_throughout(tone: Path, tmp_path: Path) -> None:
    out = tmp_path / "continuous"
    manifest = run_session(
        control_spec(tone, "continuous", [("unmuted", 2), ("muted", 3), ("unmuted", 2)]), out
    )
    assert manifest["status"] == "ok", manifest["failure"]
    manifest, events, os_rows, app_rows = evidence(out)
    assert_contract(out, manifest, events, tone)
    assert [label.policy for label in classified(out).values()] == ["continuous", "continuous"]
    (join,), (mute,), (unmute,), (leave,) = (
        event_times(events, n) for n in ("join", "mute", "unmute", "leave")
    )
    for lo, hi in ((join + 0.3, mute), (mute, unmute), (unmute + 0.3, leave)):
        assert os_fraction(os_rows, lo, hi) > 0.9
        rate = len(app_read_times(app_rows, lo, hi)) / (hi - lo)
        assert 45 <= rate <= 55, "one 20 ms pa_simple_read after another"
    assert {r["api"] for r in app_rows} == {"pulse:pa_simple_read"}
    assert {r["pid"] for r in app_rows} == set(manifest["tracer"]["roots"])
    # The microphone's writer and PulseAudio's drain of it ran real-time (as root, here).
    (pulse,) = [e for e in events if e["event"] == "pulse_ready"]
    (stimulus,) = [e for e in events if e["event"] == "stimulus_start"]
    assert pulse["pipe_source_sched"] == stimulus["sched"] == "SCHED_FIFO:5"
    # The app received the tone itself (peak 0.5 of full scale), while muted too.
    muted_peaks = [r["peak"] for r in app_rows if mute < r["t"] < unmute]
    assert min(muted_peaks) > 0.45
    # Same clock: the first read after join shows up at both witnesses within 0.3 s.
    first_app = min(app_read_times(app_rows, join, leave))
    first_os = min(os_read_times(os_rows, join, leave))
    assert abs(first_app - first_os) < 0.3
    # Nothing read before join nor after leave (beyond the 4 KiB the FIFO itself buffers).
    assert not app_read_times(app_rows, 0, join)
    assert not app_read_times(app_rows, leave + 0.05, 1e9)
    assert len(os_read_times(os_rows, 0, join)) <= 2
    assert not os_read_times(os_rows, leave + 0.3, 1e9)


@pytest.mark.testbed
def test_stops_policy_no_reads_at_either_witness_while_muted(tone: Path, tmp_path: Path) -> None:
    out = tmp_path / "stops"
    manifest = run_session(
        control_spec(tone, "stops", [("unmuted", 2), ("muted", 4), ("unmuted", 2)]), out
    )
    assert manifest["status"] == "ok", manifest["failure"]
    manifest, events, os_rows, app_rows = evidence(out)
    assert_contract(out, manifest, events, tone)
    assert [label.policy for label in classified(out).values()] == ["stops", "stops"]
    (join,), (mute,), (unmute,), (leave,) = (
        event_times(events, n) for n in ("join", "mute", "unmute", "leave")
    )
    assert os_fraction(os_rows, join + 0.3, mute) > 0.9
    assert len(app_read_times(app_rows, join, mute)) > 80
    # The stream is closed at mute: PulseAudio stops draining the FIFO within a few ticks.
    assert not app_read_times(app_rows, mute + 0.05, unmute)
    assert not os_read_times(os_rows, mute + 0.3, unmute)
    assert os_fraction(os_rows, mute + 0.3, unmute) == 0.0
    # ... and both witnesses see the reads resume at unmute.
    assert app_read_times(app_rows, unmute, unmute + 0.3)
    assert os_fraction(os_rows, unmute + 0.3, leave) > 0.9


@pytest.mark.testbed
def test_periodic_policy_reads_in_bursts_with_the_configured_period(
    tone: Path, tmp_path: Path
) -> None:
    out = tmp_path / "periodic"
    spec = control_spec(
        tone, "periodic", [("unmuted", 2), ("muted", 10), ("unmuted", 1.5)], read_s=1, every_s=3
    )
    manifest = run_session(spec, out)
    assert manifest["status"] == "ok", manifest["failure"]
    manifest, events, os_rows, app_rows = evidence(out)
    assert_contract(out, manifest, events, tone)
    (mute,), (unmute,) = event_times(events, "mute"), event_times(events, "unmute")
    app_bursts = bursts(app_read_times(app_rows, mute + 0.05, unmute))
    # Bursts at mute + 3, + 6, + 9 s, each about read_s = 1 s long, nothing in between.
    assert len(app_bursts) == 3
    for k, (start, end) in enumerate(app_bursts, 1):
        assert start - mute == pytest.approx(3 * k, abs=0.15)
        assert end - start == pytest.approx(1.0, abs=0.15)
    # The OS witness sees the same bursts: PulseAudio drains the FIFO only while the stream runs.
    os_bursts = bursts(os_read_times(os_rows, mute + 0.3, unmute))
    starts = [s for s, _ in os_bursts]
    assert len(starts) == 3
    assert [b - a for a, b in itertools.pairwise(starts)] == pytest.approx([3.0, 3.0], abs=0.15)
    assert starts[0] - app_bursts[0][0] == pytest.approx(0.0, abs=0.15)
    for start, end in os_bursts:
        assert end - start == pytest.approx(1.0, abs=0.2)
    # The study's classifier calls it periodic at both witnesses, period within 10 %.
    for witness, label in classified(out).items():
        assert label.policy == "periodic", (witness, label)
        assert label.period_s == pytest.approx(3.0, rel=0.1), witness


# --- failures --------------------------------------------------------------------------


def _start_cli(tone: Path, out: Path, phases_: list[str]) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "reallymuted.testbed.supervisor",
        "run",
        "--app",
        "control-continuous",
    ]
    argv += ["--driver", "control", "--mode", "ctrl", "--stimulus", str(tone), "--out", str(out)]
    argv += ["--option", "policy=continuous", "--lead", "0.3", "--tail", "0.3"]
    argv += ["--log", str(out.parent / "session.log")]
    for phase in phases_:
        argv += ["--phase", phase]
    return subprocess.Popen(argv, stdout=subprocess.PIPE)


def _wait_for_step(out: Path, step: str, timeout: float = 30.0) -> list[dict]:
    """Wait until the running session reaches ``step``; return its process registry."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = json.loads((out / ".session/status.json").read_text())
        except (OSError, json.JSONDecodeError):
            status = {}
        if status.get("step") == step:
            return read_jsonl(out / ".session/pids.jsonl")
        time.sleep(0.05)
    raise AssertionError(f"session never reached step {step!r}")


@pytest.mark.testbed
@pytest.mark.parametrize("victim", ["client", "capture", "tracer"])
def test_a_process_killed_mid_session_fails_it_cleanly(
    victim: str, tone: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    cli = _start_cli(tone, out, ["unmuted:2", "muted:3", "unmuted:2"])
    registry = _wait_for_step(out, "schedule")
    time.sleep(0.5)
    namespaces = [n for n in netns.names() if n.startswith(f"{netns.PREFIX}{cli.pid}-")]
    assert len(namespaces) == 1
    in_namespace = netns.pids(namespaces[0])
    started = [(e["pid"], e["starttime"]) for e in read_jsonl(out / ".session/pids.jsonl")]
    target = next(e["pid"] for e in registry if e["role"] == victim)
    os.kill(target, signal.SIGKILL)

    stdout, _ = cli.communicate(timeout=60)
    assert cli.returncode != 0
    failed = json.loads((out / FAILED).read_text())
    assert failed["status"] == "failed" and failed["exit_status"] != 0
    assert failed["failure"]["step"] == "schedule"
    assert failed["failure"]["component"] == victim
    assert f"pid {target}" in failed["failure"]["error"]
    assert json.loads(stdout)["failure"]["component"] == victim
    # No half-written evidence, no working directory, nothing left running, no namespace.
    assert sorted(p.name for p in out.iterdir()) == [FAILED]
    assert not [pid for pid, start in started if netns.alive(pid, start)]
    assert not [pid for pid in in_namespace if netns.alive(pid)]
    assert namespaces[0] not in netns.names()
    assert failed["cleanup"]["netns_removed"]
    assert "session FAILED" in (tmp_path / "session.log").read_text()
    assert failed["log_tails"]["capture.log"], "the daemons' log tails are in the manifest"

    # The workflow's retry: a new attempt in the same folder keeps the failed one and says so.
    manifest = run_session(control_spec(tone, "stops", [("unmuted", 1), ("muted", 1)]), out)
    assert manifest["status"] == "ok"
    assert [a["failure"]["component"] for a in manifest["failed_attempts"]] == [victim]
    kept = out / manifest["failed_attempts"][0]["file"]
    assert json.loads(kept.read_text())["failure"] == failed["failure"]
    assert json.loads(kept.read_text())["log_tails"] == failed["log_tails"]
    assert not (out / FAILED).exists()
    # A later run after that success is no retry: it lists no failed attempt, and the kept
    # file of the earlier one stays where it was.
    again = run_session(control_spec(tone, "stops", [("unmuted", 1), ("muted", 1)]), out)
    assert again["status"] == "ok" and again["failed_attempts"] == []
    assert kept.exists()


def test_not_root_is_a_clear_failure(tone: Path, tmp_path: Path, monkeypatch) -> None:
    """Without root the supervisor stops at preflight, says why, and starts nothing."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    out = tmp_path / "out"
    manifest = run_session(control_spec(tone, "stops", [("unmuted", 1)]), out)
    assert manifest["failure"]["step"] == "preflight"
    assert "need root" in manifest["failure"]["error"]
    assert sorted(p.name for p in out.iterdir()) == [FAILED]


# --- the Snakemake rule -----------------------------------------------------------------

# what a run of the workflow reads from a clone
COPIED_FOR_A_RUN = ("Snakefile", "workflow", "scripts", "src", "envs")


@pytest.mark.testbed
@pytest.mark.workflow
def test_snakemake_builds_a_session_and_a_rerun_does_nothing(
    repo_root: Path, tmp_path: Path
) -> None:
    """Also from a copy of the workflow elsewhere: the per-session rules' commands carry no
    path of the clone (Snakemake reruns a shell rule whose text changed)."""
    import yaml

    config = yaml.safe_load((repo_root / "config.yaml").read_text())
    config["sessions"]["schedule"] = [
        {"state": "unmuted", "seconds": 1},
        {"state": "muted", "seconds": 1},
    ]
    config["sessions"]["stimuli"] = {"tone": {"kind": "tone", "seconds": 2}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    target = "results/raw/control-stops/ctrl-tone/rep1/manifest.json"
    analysed = "results/sessions/control-stops/ctrl-tone/rep1/policy.json"
    work = ["-d", str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "-c2"]
    base = [sys.executable, "-m", "snakemake", "-s", str(repo_root / "Snakefile"), *work]
    run = subprocess.run([*base, target, analysed], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    manifest = json.loads((tmp_path / target).read_text())
    assert manifest["app"] == "control-stops" and manifest["status"] == "ok"
    assert "policy_os" in json.loads((tmp_path / analysed).read_text())
    assert (tmp_path / "logs/sessions/control-stops/ctrl-tone/rep1.log").is_file()
    moved = tmp_path / "moved"
    shutil.copytree(
        repo_root,
        moved,
        ignore=lambda folder, names: (
            [n for n in names if folder == str(repo_root) and n not in COPIED_FOR_A_RUN]
            + [n for n in names if n in ("__pycache__", "node_modules", "dist")]
        ),
    )
    for code in (repo_root, moved):
        plan = [sys.executable, "-m", "snakemake", "-s", str(code / "Snakefile"), *work, "-n"]
        again = subprocess.run(
            [*plan, target, analysed],
            capture_output=True,
            text=True,
            check=False,
        )
        assert again.returncode == 0
        assert "Nothing to be done" in again.stdout + again.stderr, (code, again.stdout[-2000:])


@pytest.mark.testbed
@pytest.mark.workflow
def test_a_killed_session_fails_alone_and_a_rerun_redoes_only_it(
    repo_root: Path, tmp_path: Path
) -> None:
    """With --keep-going the other sessions finish; the rerun plans only the failed one."""
    import yaml

    config = yaml.safe_load((repo_root / "config.yaml").read_text())
    config["stages"] = {"reference": False, "sessions": True, "attack": False}
    config["sessions"]["retries"] = 0  # the path where the workflow gives up on a session
    config["sessions"]["schedule"] = [
        {"state": "unmuted", "seconds": 3},
        {"state": "muted", "seconds": 3},
        {"state": "unmuted", "seconds": 1},
    ]
    config["sessions"]["stimuli"] = {"tone": {"kind": "tone", "seconds": 2}}
    config["sessions"]["apps"] = {
        "control-continuous": {"driver": "control", "modes": ["ctrl"], "policy": "continuous"},
        "control-stops": {"driver": "control", "modes": ["ctrl"], "policy": "stops"},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    base = [sys.executable, "-m", "snakemake", "-s", str(repo_root / "Snakefile")]
    base += ["-d", str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "-c2"]
    run = subprocess.Popen(
        [*base, "--keep-going"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )

    # Kill the client of whichever session reaches its schedule first.
    outs = {
        app: tmp_path / f"results/raw/{app}/ctrl-tone/rep1" for app in config["sessions"]["apps"]
    }
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and time.monotonic() < deadline:
        for app, out in outs.items():
            try:
                status = json.loads((out / ".session/status.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if status.get("step") == "schedule":
                client = next(
                    e["pid"]
                    for e in read_jsonl(out / ".session/pids.jsonl")
                    if e["role"] == "client"
                )
                time.sleep(0.5)
                os.kill(client, signal.SIGKILL)
                victim = app
                break
        time.sleep(0.05)
    assert victim is not None, "no session reached its schedule"
    output, _ = run.communicate(timeout=300)
    assert run.returncode != 0, output.decode()[-2000:]

    survivor = next(app for app in outs if app != victim)
    failed = json.loads((outs[victim] / FAILED).read_text())
    assert failed["failure"]["component"] == "client"
    assert not (outs[victim] / MANIFEST).exists()
    assert json.loads((outs[survivor] / MANIFEST).read_text())["status"] == "ok"
    # the survivor's analysis went on; the tables that need every session did not
    assert (tmp_path / f"results/sessions/{survivor}/ctrl-tone/rep1/policy.json").is_file()
    assert not (tmp_path / "results/tables/mic_policy.csv").exists()
    assert not [n for n in netns.names() if n.startswith(netns.PREFIX)]
    log = (tmp_path / f"logs/sessions/{victim}/ctrl-tone/rep1.log").read_text()
    assert "session FAILED" in log

    dry = subprocess.run([*base, "-n"], capture_output=True, text=True, check=False)
    plan = dry.stdout + dry.stderr
    assert f"results/raw/{victim}/ctrl-tone/rep1/manifest.json" in plan
    session_jobs = re.search(r"^session\s+(\d+)\s*$", plan, re.M)
    assert session_jobs and session_jobs.group(1) == "1", plan[-2000:]  # only the failed one
    again = subprocess.run(base, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "results/tables/mic_policy.csv").is_file()
