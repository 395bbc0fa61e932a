"""The OS witness on a desktop's sound server, and Frida on PipeWire's own API, with real
programs: a headless desktop (reallymuted.testbed.headless) as ``nobody``, with PulseAudio or
PipeWire, real recording clients (``parec``, ``pw-record``) and the witness run as that user."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reallymuted.analysis.extract import read_mic_trace
from reallymuted.analysis.micpolicy import read_share
from reallymuted.io import read_jsonl
from reallymuted.testbed.headless import Desktop, headless_desktop
from reallymuted.testbed.soundserver import NoSoundServer, capture_streams, server_kind
from reallymuted.testbed.stimuli import make_stimulus

pytestmark = pytest.mark.testbed

PAREC = ["parec", "--raw", "--format=s16le", "--rate=48000", "--channels=1", "--latency-msec=20"]
BYTE_RATE = 48000 * 2  # s16 mono


@pytest.fixture(scope="module")
def root_dir() -> Iterator[Path]:
    """A directory the desktop's user can reach (pytest's tmp_path is under a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="reallymuted-desktop-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def tone(root_dir: Path) -> Path:
    path = root_dir / "tone.wav"
    make_stimulus({"kind": "tone", "seconds": 5, "freq_hz": 440, "level": 0.5}, path)
    return path


@pytest.fixture(scope="module")
def pipewire(root_dir: Path, tone: Path) -> Iterator[Desktop]:
    with headless_desktop("pipewire", root_dir, tone) as desktop:
        yield desktop


@pytest.fixture(scope="module")
def pulseaudio(root_dir: Path, tone: Path) -> Iterator[Desktop]:
    with headless_desktop("pulseaudio", root_dir, tone) as desktop:
        yield desktop


@pytest.fixture(params=["pipewire", "pulseaudio"])
def desktop(request: pytest.FixtureRequest) -> Desktop:
    return request.getfixturevalue(request.param)


@contextlib.contextmanager
def running(desktop: Desktop, name: str, argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = desktop.start(name, argv)
    try:
        yield proc
    finally:
        if name in desktop.procs:
            desktop.stop(name)


def watch_argv(desktop: Desktop, out: Path, root: int) -> list[str]:
    """The witness as the audit starts it: as the user, on the user's environment."""
    return [
        sys.executable,
        "-m",
        "reallymuted.testbed.soundserver",
        "watch",
        "--out",
        str(out),
        "--t0",
        repr(desktop.t0),
        "--interval",
        "0.1",
        "--root",
        str(root),
    ]


def now(desktop: Desktop) -> float:
    return time.monotonic() - desktop.t0


def stop_watch(desktop: Desktop, name: str) -> list[dict]:
    proc = desktop.procs[name]
    desktop.stop(name)
    assert proc.returncode == 0, desktop.log_tail(name)
    return read_jsonl(desktop.logs / f"{name}.jsonl")


def between(rows: list[dict], lo: float, hi: float) -> list[dict]:
    picked = [r for r in rows if lo <= r["t"] < hi]
    assert picked, f"no witness rows in [{lo:.2f}, {hi:.2f})"
    return picked


def test_server_kind_is_the_desktops_server(desktop: Desktop, tmp_path: Path) -> None:
    code = "import os, reallymuted.testbed.soundserver as s; print(s.server_kind(os.environ))"
    assert desktop.run([sys.executable, "-c", code]).strip() == desktop.kind  # as the user
    with pytest.raises(NoSoundServer, match="no sound server reachable"):
        server_kind({"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_RUNTIME_DIR": "/none"})


def test_a_recording_client_is_read_until_it_exits(desktop: Desktop) -> None:
    name = f"watch-rec-{desktop.kind}"
    with running(desktop, f"parec-{desktop.kind}", [*PAREC, "/dev/null"]) as parec:
        desktop.start(name, watch_argv(desktop, desktop.logs / f"{name}.jsonl", parec.pid))
        time.sleep(2.5)
        pid, killed = parec.pid, now(desktop)
    time.sleep(1.0)
    rows = stop_watch(desktop, name)

    api = {"pipewire": "os:pipewire-node", "pulseaudio": "os:pulse-stream"}[desktop.kind]
    assert {r["api"] for r in rows} == {api}
    open_rows = [r for r in rows if r["streams"]]
    assert open_rows and {s["pid"] for r in open_rows for s in r["streams"]} == {pid}
    reading = [r for r in open_rows if r["streams"][0]["reading"]]
    assert len(reading) >= 10, open_rows[:5]
    assert all(r["bytes"] > 0 and r["dropped"] == 0 for r in reading)
    first = reading[0]["t"]
    # while it records the server delivers in real time (s16 mono 48 kHz) ...
    during = between(rows, first, killed - 0.2)
    assert sum(r["bytes"] for r in during) == pytest.approx(
        BYTE_RATE * (during[-1]["t"] - during[0]["t"] + 0.1), rel=0.1
    )
    # ... and once it exited there is no stream: nothing read, everything offered dropped
    after = between(rows, killed + 0.3, 1e9)
    assert all(r["streams"] == [] and r["bytes"] == 0 and r["dropped"] > 0 for r in after)
    trace = read_mic_trace(desktop.logs / f"{name}.jsonl")
    assert read_share(trace, "os", first, killed - 0.2, 0.1) > 0.95
    assert read_share(trace, "os", killed + 0.3, 1e9, 0.1) == 0.0


def test_a_suspended_source_is_open_but_not_read(pulseaudio: Desktop) -> None:
    desktop, name = pulseaudio, "watch-suspend"
    with running(desktop, "parec-suspend", [*PAREC, "/dev/null"]) as parec:
        desktop.start(name, watch_argv(desktop, desktop.logs / f"{name}.jsonl", parec.pid))
        time.sleep(1.5)
        desktop.run(["pactl", "suspend-source", "mic", "1"])
        suspended = now(desktop)
        time.sleep(1.5)
        resumed = now(desktop)  # before: a poll that starts now may see it resumed
        desktop.run(["pactl", "suspend-source", "mic", "0"])
        time.sleep(1.5)
        rows = stop_watch(desktop, name)
    for r in between(rows, suspended + 0.3, resumed):
        assert [(s["state"], s["source_state"], s["reading"]) for s in r["streams"]] == [
            ("running", "SUSPENDED", False)
        ]
        assert r["bytes"] == 0 and r["dropped"] > 0
    assert all(r["bytes"] > 0 for r in between(rows, resumed + 0.5, 1e9))


def test_a_stopped_pipewire_client_stops_finishing_cycles(pipewire: Desktop) -> None:
    """A native client stopped by SIGSTOP keeps a ``running`` node: only the profiler's
    cycle counts show that nothing is read (about 1.5-2.5 s late)."""
    desktop, name = pipewire, "watch-stop"
    argv = ["pw-record", "--rate", "48000", "--channels", "1", "--format", "s16", "/dev/null"]
    with running(desktop, "pw-record-stop", argv) as record:
        started = now(desktop)
        desktop.start(name, watch_argv(desktop, desktop.logs / f"{name}.jsonl", record.pid))
        time.sleep(2.5)
        record.send_signal(signal.SIGSTOP)
        stopped = now(desktop)
        time.sleep(4.0)
        node = capture_streams("pipewire", desktop.env, {record.pid})
        resumed = now(desktop)
        record.send_signal(signal.SIGCONT)
        time.sleep(2.5)
        rows = stop_watch(desktop, name)
    assert [(s.state, s.reading) for s in node] == [("running", True)]  # the state alone
    assert all(r["streams"][0]["reading"] for r in between(rows, started + 1.0, stopped))
    assert {r["streams"][0]["quanta"] > 0 for r in between(rows, started + 1.0, stopped)} == {True}
    still = between(rows, stopped + 3.0, resumed)
    assert all(r["streams"][0]["state"] == "running" for r in still)
    assert not any(r["streams"][0]["reading"] or r["bytes"] for r in still)
    assert len({r["streams"][0]["quanta"] for r in still}) == 1
    assert all(r["streams"][0]["reading"] for r in between(rows, resumed + 1.5, 1e9))


@pytest.mark.parametrize(("fmt", "channels"), [("s16", 1), ("f32", 2)])
def test_pw_record_reads_are_traced_with_their_level(
    pipewire: Desktop, fmt: str, channels: int
) -> None:
    desktop, out = pipewire, pipewire.logs / f"trace-{fmt}.jsonl"
    argv = [
        "pw-record",
        "--rate",
        "48000",
        "--channels",
        str(channels),
        "--format",
        fmt,
        "/dev/null",
    ]
    with running(desktop, f"pw-record-{fmt}", argv) as record:
        tracer = subprocess.Popen(  # as root, like the audit's tracer
            [
                sys.executable,
                "-m",
                "reallymuted.testbed.tracing",
                "--root",
                str(record.pid),
                "--t0",
                repr(desktop.t0),
                "--out",
                str(out),
                "--events",
                str(desktop.logs / f"trace-{fmt}-events.jsonl"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert "ready" in json.loads(tracer.stdout.readline() or "{}")
            time.sleep(1.5)
        finally:
            tracer.send_signal(signal.SIGTERM)
            assert tracer.wait(20) == 0
    reads = read_jsonl(out)
    assert len(reads) >= 20
    assert {r["api"] for r in reads} == {"pipewire:pw_stream_dequeue_buffer"}
    assert {r["pid"] for r in reads} == {record.pid}
    frame = {"s16": 2, "f32": 4}[fmt] * channels
    assert all(r["frames"] > 0 and r["bytes"] == r["frames"] * frame for r in reads)
    # the stimulus is a 440 Hz tone at half scale: peak 0.5, RMS 0.354
    assert sum(r["frames"] for r in reads) / (reads[-1]["t"] - reads[0]["t"]) == pytest.approx(
        48000, rel=0.15
    )
    assert all(r["peak"] == pytest.approx(0.5, abs=0.02) for r in reads)
    assert all(r["rms"] == pytest.approx(0.354, abs=0.02) for r in reads)


def test_the_witness_started_as_root_drops_to_the_user(pulseaudio: Desktop) -> None:
    """``--user``: the interpreter starts as root (it may live where the user cannot run it)
    and opens its output there (the audit's folder is root's), then becomes the user, as the
    server's socket and cookie require."""
    desktop, out = pulseaudio, pulseaudio.logs / "watch-root.jsonl"
    with running(desktop, "parec-root", [*PAREC, "/dev/null"]) as parec:
        argv = [*watch_argv(desktop, out, parec.pid), "--user", str(desktop.uid)]
        watcher = subprocess.Popen(argv, env=desktop.env, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        status = Path(f"/proc/{watcher.pid}/status").read_text()
        watcher.terminate()
        assert watcher.wait(10) == 0, watcher.stderr.read()
    assert f"Uid:\t{desktop.uid}\t{desktop.uid}\t{desktop.uid}" in status
    assert out.stat().st_uid == 0  # opened before the drop
    rows = read_jsonl(out)
    assert any(r["bytes"] > 0 and r["streams"][0]["pid"] == parec.pid for r in rows)
