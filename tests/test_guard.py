"""``reallymuted guard`` on a real sound server: PulseAudio and PipeWire, on the headless
desktop the audit tests use (``reallymuted.testbed.headless``: the user ``nobody``, a pipe
microphone fed a 440 Hz tone in real time).

The app is ``parecord`` (a real libpulse client; under PipeWire it talks to pipewire-pulse)
writing what it receives, raw, to a FIFO this test reads: each chunk is timestamped as it
arrives, so what the app got while muted, and when sound came back, is read off its own
output. The guard is driven through its socket, as root (allowed) or as another user (refused).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reallymuted.analysis import extract, micpolicy
from reallymuted.analysis.evidence import mute_segments, os_mute_stats
from reallymuted.analysis.guard import guard_table
from reallymuted.figures import saved_source
from reallymuted.figures.guard import plot_guard
from reallymuted.guard import control
from reallymuted.guard.latency import recorder
from reallymuted.io import DataError, read_jsonl
from reallymuted.testbed import netns
from reallymuted.testbed.headless import Desktop, as_user, headless_desktop
from reallymuted.testbed.spec import SessionSpec
from reallymuted.testbed.stimuli import make_stimulus
from reallymuted.testbed.supervisor import run_session

pytestmark = pytest.mark.testbed

RATE = 48000
TONE_HZ = 440.0
OTHER_UID = 65533  # a local user that is not the guard's (nobody, 65534)


@pytest.fixture(scope="module")
def tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stimuli") / "tone.wav"
    make_stimulus({"kind": "tone", "seconds": 2, "freq_hz": TONE_HZ, "level": 0.5}, path)
    return path


@pytest.fixture(scope="module", params=["pulseaudio", "pipewire"])
def desk(request: pytest.FixtureRequest, tone: Path) -> Iterator[Desktop]:
    root = Path(tempfile.mkdtemp(prefix=f"rm-guard-{request.param}-"))
    root.chmod(0o755)  # the desktop's user must reach it
    try:
        with headless_desktop(request.param, root, tone) as desktop:
            yield desktop
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- what the app received ------------------------------------------------------------------


def level_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(x.astype(float) ** 2)) / 32768)


def spectrum(x: np.ndarray) -> np.ndarray:
    """Magnitude spectrum of 0.5 s, normalised (1 Hz bins would be too fine: 2 Hz)."""
    x = x[: RATE // 2].astype(float)
    magnitude = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return magnitude / np.linalg.norm(magnitude)


# --- the guard -----------------------------------------------------------------------------


@dataclass
class Guard:
    desktop: Desktop
    name: str
    status_path: Path
    events_path: Path
    socket: str | None = None  # a filesystem socket, else the abstract one

    @property
    def address(self) -> str:
        return self.socket or control.default_address(self.desktop.uid)

    def request(self, command: str) -> dict:
        return control.request(command, self.address)

    def status(self) -> dict:
        return json.loads(self.status_path.read_text())

    def events(self) -> list[dict]:
        return read_jsonl(self.events_path) if self.events_path.exists() else []

    def wait(self, what: str, ready: object, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, KeyError, control.ControlError):
                if ready():  # type: ignore[operator]
                    return
            time.sleep(0.02)
        log = self.desktop.log_tail(self.name)
        raise AssertionError(f"guard: {what} not seen in {timeout} s\n{log}\n{self.events()}")


def start_guard(
    desktop: Desktop, name: str, options: list[str], app: list[str], netns_name: str = ""
) -> Guard:
    """A guard as the desktop's user; in ``netns_name`` (with a filesystem socket: an abstract
    one belongs to the namespace) if given."""
    status = desktop.base / f"{name}.status.json"
    events = desktop.logs / f"{name}.events.jsonl"
    sock = str(desktop.base / f"{name}.sock") if netns_name else None
    argv = [sys.executable, "-m", "reallymuted.cli", "guard", "run", "--app", name]
    argv += ["--status", str(status), "--events", str(events)]
    argv += ["--socket", sock] if sock else []
    argv += [*options, "--", *app]
    if netns_name:  # as Desktop.start does, inside the namespace
        with (desktop.logs / f"{name}.log").open("ab") as log:
            desktop.procs[name] = subprocess.Popen(
                [*netns.exec_prefix(netns_name), *desktop.command(argv)],
                env=desktop.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    else:
        desktop.start(name, argv)
    guard = Guard(desktop, name, status, events, sock)
    guard.wait("its first stream", lambda: guard.status()["streams"])
    return guard


def stream_muted(desktop: Desktop, pid: int) -> bool | None:
    """The server's own word (pactl as the desktop's user) on the app's stream."""
    outputs = json.loads(desktop.run(["pactl", "-f", "json", "list", "source-outputs"]))
    found = [o for o in outputs if o["properties"].get("application.process.id") == str(pid)]
    return bool(found[0]["mute"]) if found else None


# --- the tests -----------------------------------------------------------------------------


def test_muted_the_app_reads_digital_silence_and_unmuted_its_audio_is_unchanged(
    desk: Desktop,
) -> None:
    bare_argv, bare = recorder(desk, "bare")  # the same app without a guard: the reference
    desk.start("bare", bare_argv)
    argv, received = recorder(desk, "app")
    guard = start_guard(desk, "guard-1", ["--live"], argv)
    try:
        time.sleep(1.5)
        mute_sent = time.monotonic()
        reply = guard.request("mute")
        muted_at = time.monotonic()
        assert reply["muted"] and reply["indicator"] == "off"
        assert all(s["muted"] for s in reply["streams"]) and reply["streams"]
        time.sleep(2.0)
        unmute_sent = time.monotonic()
        reply = guard.request("unmute")
        assert not reply["muted"] and reply["indicator"] == "on"
        time.sleep(1.5)
    finally:
        desk.stop("guard-1")
        desk.stop("bare")
    # muted: nothing but zeros reached the app (from the reply on: the mute is applied)
    while_muted = received.between(muted_at + 0.03, unmute_sent)
    assert len(while_muted) > RATE  # it went on reading: the app cannot tell
    assert not np.any(while_muted), f"{np.count_nonzero(while_muted)} non-zero samples"
    # sound came back, and before the mute it was there
    back = received.first_sound_after(unmute_sent)
    assert back is not None and back - unmute_sent < 0.5
    before = received.between(mute_sent - 1.0, mute_sent)
    after = received.between(back + 0.2, back + 1.2)
    # unmuted, what the app receives is what an unguarded app receives at the same time
    reference = bare.between(back + 0.2, back + 1.2)
    for x in (before, after):
        assert abs(level_db(x) - level_db(reference)) < 0.1
        assert float(spectrum(x) @ spectrum(reference)) > 0.99
    assert np.any(bare.between(mute_sent, unmute_sent)), "the unguarded app was muted too"
    kinds = [e["event"] for e in guard.events()]
    assert kinds.count("muted") == 1 and kinds.count("unmuted") == 1


def test_the_guard_follows_a_reopened_stream_and_a_child_and_leaves_other_apps_alone(
    desk: Desktop,
) -> None:
    first_argv, first = recorder(desk, "first", app="app2")
    second_argv, second = recorder(desk, "second", app="app2")
    other_argv, other = recorder(desk, "other")
    desk.start("other", other_argv)  # another app with the microphone: left alone
    # the app: a shell whose child records, stops, and records again (a reopened stream)
    script = f"{' '.join(first_argv)} & sleep 1.5; kill $!; sleep 0.3; exec {' '.join(second_argv)}"
    guard = start_guard(desk, "guard-2", ["--muted"], ["sh", "-c", script])
    try:
        guard.wait("the second stream", lambda: second.first_samples(RATE).size == RATE, timeout=15)
        status = guard.status()
        assert status["muted"] and status["indicator"] == "off"
        assert [o["app"] for o in status["others"]] == ["other"]
        assert not any(o["muted"] for o in status["others"])
        # another client unmutes the app's stream (any client of the server may): re-muted
        stream = status["streams"][0]
        unmuted_by_other = time.monotonic()
        desk.run(["pactl", "set-source-output-mute", str(stream["id"]), "0"])
        guard.wait("re-mute", lambda: any(e["event"] == "reasserted" for e in guard.events()))
        time.sleep(0.5)
    finally:
        desk.stop("guard-2")
        desk.stop("other")
    events = guard.events()
    assert len([e for e in events if e["event"] == "stream"]) == 2, events
    # Both streams were opened while muted. The first is muted only once the guard has seen it
    # (its first samples may reach the app: measured, docs/guard.md); the reopened one, of the
    # same client name, is muted by the server itself from its first sample (PulseAudio's
    # module-stream-restore, WirePlumber's restore-stream remember the guard's mute).
    opened = {
        name: np.flatnonzero(r.first_samples(RATE // 4))
        for name, r in [("first", first), ("second", second)]
    }
    print(f"{desk.kind}: first samples reaching a new stream before its mute: {opened}")
    assert opened["first"].size == 0 or opened["first"][-1] < RATE // 10
    assert opened["second"].size == 0
    # while another client had unmuted it, until the guard muted it again
    window = second.between(unmuted_by_other, unmuted_by_other + 1.0)
    print(f"{desk.kind}: non-zero samples while re-muting: {np.count_nonzero(window)}")
    assert np.count_nonzero(window) < RATE // 10
    assert np.any(other.between(0, time.monotonic()))  # the other app heard the tone


def test_a_dead_guard_leaves_the_app_muted_and_a_new_one_adopts_it(desk: Desktop) -> None:
    argv, received = recorder(desk, "app3")
    guard = start_guard(desk, "guard-3", ["--muted"], argv)
    app_pid = guard.status()["streams"][0]["pid"]

    def reading_silence() -> bool:
        now = time.monotonic()
        last = received.between(now - 0.25, now)
        return last.size > 0 and not np.any(last)

    try:
        # A new stream's first samples, from before the guard saw it, may reach the app
        # (docs/guard.md) and may arrive late (parecord writes in bursts): killed only once
        # the app has received a quarter second of the mute's zeros, so that all it receives
        # after the kill came after it.
        guard.wait("the app reading digital silence", reading_silence)
        os.kill(desk.pids["guard-3"], signal.SIGKILL)  # the guard only: the app lives on
        desk.procs["guard-3"].wait(5)
        killed = time.monotonic()
        time.sleep(1.0)
        assert stream_muted(desk, app_pid) is True
        assert not np.any(received.between(killed, time.monotonic()))
        # a new guard, given the running app, takes the state it finds: muted
        desk.start("guard-3b", guard_argv(desk, "guard-3b", ["--pid", str(app_pid)]))
        again = Guard(
            desk,
            "guard-3b",
            desk.base / "guard-3b.status.json",
            desk.logs / "guard-3b.events.jsonl",
        )
        again.wait("adoption", lambda: again.status()["streams"])
        assert again.status()["muted"] is True
        assert again.request("unmute")["muted"] is False
        assert stream_muted(desk, app_pid) is False
    finally:
        with contextlib.suppress(KeyError):
            desk.stop("guard-3b")
        os.kill(app_pid, signal.SIGTERM)
        desk.procs.pop("guard-3")


def guard_argv(desktop: Desktop, name: str, options: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "reallymuted.cli", "guard", "run", "--app", name]
    status, events = desktop.base / f"{name}.status.json", desktop.logs / f"{name}.events.jsonl"
    return [*argv, "--status", str(status), "--events", str(events), *options]


ATTACKER = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1].replace("@", "\\0", 1))
s.sendall(b'{"command": "unmute"}\\n')
print(s.recv(4096).decode())
"""


def test_another_user_cannot_unmute_through_the_socket_and_is_logged(desk: Desktop) -> None:
    argv, _received = recorder(desk, "app4")
    guard = start_guard(desk, "guard-4", ["--muted"], argv)
    try:
        address = control.shown(guard.address)
        done = subprocess.run(
            as_user(OTHER_UID, OTHER_UID, [sys.executable, "-c", ATTACKER, address]),
            capture_output=True,
            text=True,
            timeout=20,
            env={"PATH": "/usr/bin:/bin"},
        )
        answer = json.loads(done.stdout)
        assert answer["ok"] is False and "uid 65533" in answer["error"]
        refused = [e for e in guard.events() if e["event"] == "refused"]
        assert [(e["peer_uid"], e["command"]) for e in refused] == [(OTHER_UID, "unmute")]
        assert guard.status()["refused"] == 1 and guard.status()["muted"] is True
        assert "refused a request from uid 65533" in desk.log_tail("guard-4")  # its stderr
        # the guard's own user and root may
        assert guard.request("status")["muted"] is True
        desk.run([sys.executable, "-m", "reallymuted.cli", "guard", "unmute"])
        assert guard.status()["muted"] is False
    finally:
        desk.stop("guard-4")


def test_the_client_will_not_talk_to_a_socket_held_by_another_user(tmp_path: Path) -> None:
    """Whoever binds the guard's name first could pose as it: the client checks who holds it."""
    name = f"\0reallymuted-guard-test.{os.getpid()}"
    code = (
        "import socket, sys, time; s = socket.socket(socket.AF_UNIX); "
        "s.bind(sys.argv[1].replace('@', '\\0', 1)); s.listen(1); time.sleep(20)"
    )
    squatter = subprocess.Popen(
        as_user(OTHER_UID, OTHER_UID, [sys.executable, "-c", code, "@" + name[1:]])
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_UNIX) as probe, contextlib.suppress(OSError):
                probe.connect(name)
                break
            time.sleep(0.05)
        # root may talk to any user's guard; a user only to their own (or root's)
        other = as_user(
            65534,
            65534,
            [
                sys.executable,
                "-c",
                "import sys; from reallymuted.guard import control\n"
                "try: control.request('status', sys.argv[1].replace('@', '\\0', 1))\n"
                "except control.ControlError as e: print(e)",
                "@" + name[1:],
            ],
        )
        done = subprocess.run(other, capture_output=True, text=True, timeout=20)
        assert f"held by uid {OTHER_UID}" in done.stdout, done.stderr
    finally:
        squatter.kill()
        squatter.wait()


# --- hotkey mode: one key mutes the app (its own hotkey) and the OS -------------------------

WEB = Path(__file__).resolve().parents[1] / "src/reallymuted/testbed/web"  # the meeting page


@pytest.fixture(scope="module")
def offline() -> Iterator[str]:
    """A network namespace with no way out, serving the meeting page on its loopback: Chromium
    there reaches the page and nothing else (its background requests go nowhere)."""
    name = f"rmguard-{os.getpid()}-{secrets.token_hex(2)}"
    netns.create(name)
    # WebRTC leaves out loopback candidates: the page's call to itself needs an address that
    # is not loopback, on an interface that leads nowhere (a veth pair with both ends in the
    # namespace: this kernel has no dummy interfaces)
    for argv in (
        ["link", "add", "rm0", "type", "veth", "peer", "name", "rm1"],
        ["addr", "add", "10.234.0.1/24", "dev", "rm0"],
        ["link", "set", "rm0", "up"],
        ["link", "set", "rm1", "up"],
    ):
        subprocess.run(["ip", "-n", name, *argv], check=True, capture_output=True)
    server = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(PAGE_PORT)]
    procs = netns.ProcessSet()
    try:
        procs.start("web", [*netns.exec_prefix(name), *server, "-d", str(WEB)], output=None)
        deadline = time.monotonic() + 10
        probe = [*netns.exec_prefix(name), sys.executable, "-c", PROBE, str(PAGE_PORT)]
        while subprocess.run(probe, capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "the page server did not start"
            time.sleep(0.1)
        yield name
    finally:
        procs.stop_all()
        netns.destroy(name)


PAGE_PORT = 8000
PROBE = "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)"


def window_title(desktop: Desktop, window: str) -> str:
    return desktop.run(["xdotool", "getwindowname", window]).strip()


def test_hotkey_mode_one_key_mutes_the_app_and_the_os(desk: Desktop, offline: str) -> None:
    home = desk.env["HOME"]
    chromium = [
        "chromium",
        *["--no-first-run", "--no-default-browser-check", "--password-store=basic"],
        "--disable-gpu",
        f"--user-data-dir={home}/chromium-guard",
        "--use-fake-ui-for-media-stream",
        f"--app=http://127.0.0.1:{PAGE_PORT}/meeting.html#autojoin&mode=soft",
    ]
    guard = start_guard(desk, "guard-5", ["--live", "--app-hotkey", "m"], chromium, offline)
    # what the person's desktop shortcut runs
    toggle = [sys.executable, "-m", "reallymuted.cli", "guard", "toggle", "--socket", guard.address]
    try:  # once the page has joined (its title says so) and listens for its hotkey
        search = desk.command(["xdotool", "search", "--onlyvisible", "--name", "^unmuted$"])
        joined = lambda: subprocess.run(search, env=desk.env, capture_output=True).stdout  # noqa: E731
        guard.wait("the page's join", joined, timeout=20)
        time.sleep(1.0)  # a freshly mapped Chromium window may drop the first keys it gets
        desk.run(toggle)
        sent = [e for e in guard.events() if e["event"] == "app-hotkey"]
        assert len(sent) == 1 and sent[0]["returncode"] == 0 and sent[0]["window"], sent
        window = sent[0]["window"]
        guard.wait("the page's mute", lambda: window_title(desk, window) == "muted")
        status = guard.status()
        assert status["muted"] and all(s["muted"] for s in status["streams"])
        desk.run(toggle)
        guard.wait("the page's unmute", lambda: window_title(desk, window) == "unmuted")
        assert not any(s["muted"] for s in guard.status()["streams"])
    finally:
        desk.stop("guard-5")
    events = guard.events()
    muted = next(e["t"] for e in events if e["event"] == "muted")
    hotkey = next(e["t"] for e in events if e["event"] == "app-hotkey")
    print(f"{desk.kind}: app hotkey sent {1000 * (hotkey - muted):.0f} ms after the OS mute")


# --- a testbed session with the guard: the study's guard on/off -----------------------------


@pytest.fixture(scope="module")
def guarded_sessions(tone: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """The same baresip session (PCMU, its own mute) without and with the guard."""
    root = tmp_path_factory.mktemp("sessions")
    done = {}
    for guard in (False, True):
        spec = SessionSpec(
            app="baresip-pcmu",
            driver="baresip",
            mode="ctrl",
            stimulus="tone",
            stimulus_path=str(tone),
            rep=1,
            schedule=[{"state": s, "seconds": d} for s, d in SESSION_SCHEDULE],
            options={"codec": "pcmu"},
            lead_s=0.5,
            tail_s=0.3,
            guard=guard,
        )
        out = root / ("guarded" if guard else "bare")
        manifest = run_session(spec, out)
        assert manifest["status"] == "ok", manifest.get("failure")
        done[guard] = out
    return done


SESSION_SCHEDULE = [("unmuted", 2.0), ("muted", 3.0), ("unmuted", 2.0)]


def app_reads_while_muted(session: Path) -> np.ndarray:
    """The RMS of every read the app made (the Frida witness) between mute and unmute."""
    reads = extract.read_mic_trace(session / "mic_trace.jsonl")
    segments = mute_segments(read_jsonl(session / "events.jsonl"))
    (start, end), *_ = [(s.start, s.end) for s in segments if s.state == "muted"]
    app = reads[(reads["witness"] == "app") & (reads["t"] > start + 0.1) & (reads["t"] < end - 0.1)]
    return app["rms"].to_numpy(dtype=float)


def test_a_guarded_session_reads_digital_silence_while_muted(
    guarded_sessions: dict[bool, Path],
) -> None:
    bare, guarded = (app_reads_while_muted(guarded_sessions[g]) for g in (False, True))
    print(f"baresip reads while muted: bare {len(bare)} (RMS max {bare.max(initial=0):.4f}), "
          f"guarded {len(guarded)} (RMS max {guarded.max(initial=0):.4f})")  # fmt: skip
    assert len(bare) and bare.max() > 0.01  # without the guard it hears the tone
    assert len(guarded) == 0 or guarded.max() == 0.0  # with it: silence, or no reads
    events = read_jsonl(guarded_sessions[True] / "events.jsonl")
    mutes = [e for e in events if e["event"] in ("mute", "unmute")]
    assert [e["guard"]["muted"] for e in mutes] == [True, False]
    assert all(e["guard"]["streams"] >= 1 for e in mutes)


def test_the_guard_table_sets_each_guarded_session_beside_its_twin(
    guarded_sessions: dict[bool, Path], tmp_path: Path
) -> None:
    """The study's own per-session analysis of the two sessions, then the guard table: the
    guard column comes from the manifests, the verdict from the app's reads."""
    states = []
    for guard, session in guarded_sessions.items():
        out = {
            n: tmp_path / f"{guard}-{n}" for n in ("packets", "reads", "states", "policy", "flows")
        }
        extract.extract_session(session, out["packets"], out["reads"])
        tables = {n: out[n] for n in ("states", "policy", "flows")}
        micpolicy.write_session_analysis(session, out["packets"], out["reads"], tables)
        states.append(pd.read_csv(out["states"]))
    both = pd.concat(states)
    # the two sessions have one app id: as the study would, give the guarded one its own
    both.loc[both.guard == "on", "app"] = "baresip-pcmu-guarded"
    table = guard_table(both, {"baresip-pcmu-guarded": "baresip-pcmu"})
    assert list(table.guard) == ["off", "on"] and set(table.source) == {"testbed"}
    off, on = table.iloc[0], table.iloc[1]
    assert off.app_rms_mean > 0.01 and off.app_read_share > 0.9 and off.verdict == ""
    # the muted state's first tens of ms precede the guard's answer; from it on: zeros
    assert on.app_read_share > 0.9 and on.app_rms_mean < off.app_rms_mean / 100
    assert on.app_reads_after_os_mute > 100 and on.app_sounding_reads_after_os_mute == 0
    assert 0 < on.os_mute_delay_ms < 1000 and on.verdict == "digital silence"
    print(f"OS mute took {on.os_mute_delay_ms:.0f} ms; muted-state RMS {on.app_rms_mean:.2e}")
    with pytest.raises(DataError, match="its sessions say guard"):
        guard_table(both, {"baresip-pcmu": "baresip-pcmu-guarded"})  # the twins swapped
    with pytest.raises(DataError, match="linphone-guarded: no muted session"):
        guard_table(both, {"linphone-guarded": "baresip-pcmu"})  # a guarded app never ran
    plot_guard(table, [tmp_path / "guard.png"])
    assert saved_source(tmp_path / "guard.png") == "source: testbed"


def test_reads_after_the_os_mute_start_once_the_buffered_samples_are_read() -> None:
    """The app-side reads of a guarded baresip session of the study (PCMU, 20-ms reads; times
    and RMS as recorded on 2026-12-06): the app paused for 50 ms across the guard's answer, so
    its first read after it returned samples captured before it (a decaying tail, -77 dBFS);
    its read just before the unmute blocked across it. Neither is sound let through the mute;
    a sounding read between them is."""
    mute, applied, unmute = 7.70458, 7.73065, 17.70462
    sounding = {7.6308: 0.0677, 7.6908: 0.0108, 7.7109: 0.0048, 7.7611: 0.000136,
                17.6909: 0.000253, 17.7221: 0.0292}  # fmt: skip
    times = [7.6308, 7.6508, 7.671, 7.6908, 7.7109, 7.7611, 7.7612, 7.7709]
    times += [round(7.7945 + 0.02 * k, 4) for k in range(495)] + [17.6909, 17.7221, 17.7309]
    reads = pd.DataFrame(
        {"t": times, "witness": "app", "rms": [sounding.get(t, 0.0) for t in times]}
    )
    events = [
        {"t": mute, "event": "mute", "guard": {"muted": True, "applied_t": applied}},
        {"t": unmute, "event": "unmute", "guard": {"muted": False, "applied_t": 17.7339}},
    ]
    stats = os_mute_stats(reads, events)
    assert stats["os_mute_delay_ms"] == pytest.approx(26.07, abs=0.01)
    assert stats["app_sounding_reads_after_os_mute"] == 0
    assert stats["app_reads_after_os_mute"] == 2 + 495  # from 7.7612 on, 17.6909 left out
    leaked = reads.copy()
    leaked.loc[leaked.t == 12.0145, "rms"] = 0.01  # sound while the OS had the stream muted
    assert 12.0145 in set(leaked.t)
    assert os_mute_stats(leaked, events)["app_sounding_reads_after_os_mute"] == 1
