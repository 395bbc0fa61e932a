"""``reallymuted audit`` on real programs, on a headless desktop the tests make.

The desktop (``reallymuted.testbed.headless``) is Xvfb plus a real sound server of the
unprivileged user ``nobody``: PipeWire (pipewire, wireplumber, pipewire-pulse) or PulseAudio,
each with a pipe microphone fed from a tone. The apps reach a peer in a network namespace of
its own on this machine (a web server for the meeting page and its telemetry, a baresip that
answers calls) through the audit's NAT uplink. Each audit's policy label must equal the label
the testbed gives the same client and mute mode (a testbed session run here, with the same
schedule).
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
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import PIPE

import pytest

from reallymuted.analysis import extract
from reallymuted.analysis.evidence import mute_segments
from reallymuted.analysis.micpolicy import PolicyParams, label_policy
from reallymuted.analysis.verdict import policy_of
from reallymuted.io import read_jsonl
from reallymuted.paths import MANIFEST
from reallymuted.testbed import netns
from reallymuted.testbed.desktop import NETNS_PREFIX, STATUS
from reallymuted.testbed.headless import Desktop, headless_desktop
from reallymuted.testbed.spec import SessionSpec
from reallymuted.testbed.stimuli import make_stimulus
from reallymuted.testbed.supervisor import run_session

pytestmark = pytest.mark.testbed

SRC = Path(__file__).resolve().parents[1] / "src"
WEB = SRC / "reallymuted/testbed/web"  # the meeting page, served by the peer
REALLYMUTED = Path(sys.executable).parent / "reallymuted"
PEER_ADDR, HOST_ADDR = "10.233.0.2", "10.233.0.1"
PEER_SIP = 5062
SCHEDULE = [("unmuted", 2.5), ("muted", 4.5), ("unmuted", 2.5)]
# (client, mute mode) as the testbed names them
CLIENTS = [
    ("chromium", "soft"),
    ("chromium", "replace"),
    ("chromium", "stop"),
    ("baresip-pcmu", "ctrl"),
    ("control-stops", "ctrl"),
]


# --- the peer: "the internet" of these tests ---------------------------------------------

PEER_SERVER = textwrap.dedent(
    """
    import functools, http.server, sys
    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(204)
            self.end_headers()
        def log_message(self, format, *args):
            sys.stderr.write(f"{self.client_address[0]} {format % args}\\n")
            sys.stderr.flush()
    handler = functools.partial(Handler, directory=sys.argv[1])
    http.server.ThreadingHTTPServer(("0.0.0.0", 8000), handler).serve_forever()
    """
)


@dataclass
class Peer:
    netns: str
    host_if: str
    log: Path

    @property
    def url(self) -> str:
        return f"http://{PEER_ADDR}:8000"


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    """A web server and an auto-answering baresip in a namespace of their own, reached from
    the host through a veth pair (the audits' uplinks leave through it)."""
    root = tmp_path_factory.mktemp("peer")
    name = f"rmpeer-{os.getpid()}-{secrets.token_hex(2)}"
    host_if = f"rmp-{secrets.token_hex(3)}"
    netns.create(name)
    procs = netns.ProcessSet()
    try:
        for argv in (
            ["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", name],
            ["ip", "addr", "add", f"{HOST_ADDR}/30", "dev", host_if],
            ["ip", "link", "set", host_if, "up"],
            ["ip", "-n", name, "addr", "add", f"{PEER_ADDR}/30", "dev", "eth0"],
            ["ip", "-n", name, "link", "set", "eth0", "up"],
            ["ip", "-n", name, "route", "add", "default", "via", HOST_ADDR],
        ):
            subprocess.run(argv, check=True, capture_output=True)
        log = root / "web.log"
        server = [sys.executable, "-c", PEER_SERVER, str(WEB)]
        procs.start(
            "web",
            [*netns.exec_prefix(name), *server],
            output=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        conf = root / "baresip"
        conf.mkdir()
        (conf / "config").write_text(
            baresip_config(PEER_ADDR, PEER_SIP, "ausine,440", [], 48000, 2)
        )
        (conf / "accounts").write_text(
            f"<sip:bob@{PEER_ADDR}:{PEER_SIP}>;regint=0;answermode=auto;audio_codecs=PCMU\n"
        )
        (conf / "contacts").write_text("")
        procs.start(
            "baresip-peer",
            [*netns.exec_prefix(name), "baresip", "-f", str(conf)],
            output=root / "baresip-peer.log",
            env={**os.environ, "HOME": str(root)},
        )
        web = procs.get("web")
        deadline = time.monotonic() + 30
        while not _answers(PEER_ADDR, 8000):
            assert web is not None and web.returncode() is None, log.read_text()
            assert time.monotonic() < deadline, f"no web server on the peer: {log.read_text()}"
            time.sleep(0.2)
        yield Peer(name, host_if, log)
    finally:
        procs.stop_all()
        netns.destroy(name)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)


def _answers(address: str, port: int) -> bool:
    """Whether a TCP server answers there (the peer, reached through its veth)."""
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def baresip_config(
    interface: str,
    sip_port: int,
    source: str,
    extra: list[str],
    rate: int = 8000,
    channels: int = 1,
) -> str:
    """A baresip configuration; ``interface``: an address, or an interface name (baresip
    wants a real address: the audit's namespace address is known only once it runs)."""
    modules = "/usr/lib/baresip/modules"
    listen = [f"sip_listen {interface}:{sip_port}"] if interface[0].isdigit() else []
    lines = [
        "poll_method epoll",
        *listen,
        f"net_interface {interface}",
        f"audio_source {source}",
        "audio_player aubridge,nil",
        "audio_alert aubridge,nil",
        f"ausrc_srate {rate}",
        f"auplay_srate {rate}",
        f"ausrc_channels {channels}",
        "rtp_ports 20000-20009",
        f"module_path {modules}",
        "module g711.so",
        "module alsa.so",
        "module ausine.so",
        "module aubridge.so",
        "module_tmp account.so",
        "module_app menu.so",
        *extra,
        "",
    ]
    return "\n".join(lines)


# --- the desktops --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stimuli") / "tone.wav"
    make_stimulus({"kind": "tone", "seconds": 2, "freq_hz": 440, "level": 0.5}, path)
    return path


@pytest.fixture(scope="module", params=["pulseaudio", "pipewire"])
def desk(request: pytest.FixtureRequest, tone: Path) -> Iterator[Desktop]:
    # the desktop's user must reach its folder: not under pytest's (root-only) tmp_path
    root = Path(tempfile.mkdtemp(prefix=f"rm-desktop-{request.param}-"))
    root.chmod(0o755)
    try:
        with headless_desktop(request.param, root, tone) as desktop:
            yield desktop
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- running an audit ----------------------------------------------------------------------


@dataclass
class Audit:
    out: Path
    proc: subprocess.Popen[str]

    def netns(self, timeout: float = 20.0) -> str:
        """The audit's namespace, once it exists."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, json.JSONDecodeError):
                name = json.loads((self.out / STATUS).read_text())["netns"]
                if name:
                    return name
            assert self.proc.poll() is None, self.proc.communicate()
            time.sleep(0.05)
        raise AssertionError("the audit made no namespace in time")

    def finish(self, timeout: float = 90.0) -> tuple[int, str, dict]:
        stdout, stderr = self.proc.communicate(timeout=timeout)
        verdict_path = self.out / "verdict.json"
        verdict = json.loads(verdict_path.read_text()) if verdict_path.exists() else {}
        return self.proc.returncode, stdout + stderr, verdict


def start_audit(
    app: str, desktop: Desktop, out: Path, options: list[str], command: list[str], **popen: object
) -> Audit:
    env = {
        **os.environ,
        **{k: v for k, v in desktop.env.items() if k not in ("HOME", "PATH")},
        "SUDO_UID": str(desktop.uid),
        "SUDO_GID": str(desktop.gid),
    }
    argv = [str(REALLYMUTED), "audit", "--out", str(out), f"--app={app}"]
    # the uplink leads to the peer only, and names are asked of the peer (which has no
    # resolver): nothing of the tests leaves this machine
    argv += [f"--egress={_egress()}", f"--dns={PEER_ADDR}"]
    argv += [f"--env=HOME={desktop.env['HOME']}", *options, "--", *command]
    proc = subprocess.Popen(  # type: ignore[call-overload]
        argv, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen
    )
    return Audit(out, proc)


_EGRESS: list[str] = []


def _egress() -> str:
    return _EGRESS[0]


@pytest.fixture(autouse=True)
def _egress_is_the_peer(peer: Peer) -> None:
    _EGRESS[:] = [peer.host_if]


class events_file:
    """Notes a person's mute and unmute with the time, as JSON lines for --events."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.muted = False
        path.write_text("")

    def __call__(self, event: str) -> None:
        self.muted = event == "mute"
        with self.path.open("a") as fh:
            fh.write(json.dumps({"event": event, "epoch": time.time()}) + "\n")


def chromium_command(desktop: Desktop, peer: Peer, mode: str) -> list[str]:
    home = desktop.env["HOME"]
    page = f"{peer.url}/meeting.html#autojoin&mode={mode}&telemetry=/telemetry"
    return [
        "chromium",
        "--no-first-run",
        "--no-default-browser-check",
        "--password-store=basic",
        "--disable-gpu",
        f"--user-data-dir={home}/chromium-{mode}",
        "--use-fake-ui-for-media-stream",  # (sandbox on, as on a person's desktop)
        f"--unsafely-treat-insecure-origin-as-secure={peer.url}",
        f"--app={page}",
    ]


def hotkey_options() -> list[str]:
    return ["--hotkey", "m", *[f"--phase={s}:{d:g}" for s, d in SCHEDULE]]


def ctrl(netns_name: str, command: str, params: str = "") -> dict:
    """One ctrl_tcp command to the baresip inside the audit's namespace."""
    script = textwrap.dedent(
        """
        import json, socket, sys, time
        body = json.dumps({"command": sys.argv[1], "params": sys.argv[2], "token": "t"}).encode()
        deadline = time.monotonic() + 15
        while True:
            try:
                s = socket.create_connection(("127.0.0.1", 4444), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline: raise
                time.sleep(0.1)
        s.sendall(str(len(body)).encode() + b":" + body + b",")
        buf = b""
        while True:
            buf += s.recv(65536)
            head, _, rest = buf.partition(b":")
            if head.isdigit() and len(rest) > int(head):
                msg = json.loads(rest[: int(head)])
                if msg.get("response"):
                    print(json.dumps(msg)); break
                buf = rest[int(head) + 1 :]
        """
    )
    done = subprocess.run(
        ["ip", "netns", "exec", netns_name, sys.executable, "-c", script, command, params],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(done.stdout)


def run_client_audit(
    client: str, mode: str, desktop: Desktop, peer: Peer, out: Path
) -> tuple[int, str, dict]:
    """Audit one client on ``desktop`` with the schedule, as a person would drive it."""
    if client == "chromium":
        command = chromium_command(desktop, peer, mode)
        return start_audit(
            client, desktop, out, [f"--mode={mode}", *hotkey_options()], command
        ).finish()
    timeline = out.parent / f"{out.name}.events"
    note = events_file(timeline)
    options = [f"--mode={mode}", f"--events={timeline}"]
    if client == "control-stops":
        # the control client takes its commands on stdin, which the audit passes through
        # run by the system's Python: the user may not reach this one (e.g. under /root)
        control = ["/usr/bin/python3", "-m", "reallymuted.testbed.drivers.control"]
        options.append(f"--env=PYTHONPATH={SRC}")
        audit = start_audit(client, desktop, out, options, [*control, "--policy=stops"], stdin=PIPE)
        assert audit.proc.stdin is not None
        audit.netns()
        for (state, seconds), command in zip(SCHEDULE, ("join", "mute", "unmute"), strict=True):
            audit.proc.stdin.write(command + "\n")
            audit.proc.stdin.flush()
            if state == "muted" or command == "unmute":
                note(command)
            time.sleep(seconds)
        audit.proc.stdin.write("leave\nquit\n")
        audit.proc.stdin.flush()
        return audit.finish()
    # baresip: dialled and muted through its ctrl_tcp inside the audit's namespace
    conf = Path(desktop.env["HOME"]) / "baresip-audit"
    conf.mkdir(exist_ok=True)
    ctrl_tcp = ["module_app ctrl_tcp.so", "ctrl_tcp_listen 127.0.0.1:4444"]
    (conf / "config").write_text(baresip_config("uplink0", 5060, "alsa,pulse", ctrl_tcp))
    (conf / "accounts").write_text("<sip:alice@127.0.0.1>;regint=0;audio_codecs=PCMU\n")
    (conf / "contacts").write_text("")
    for path in (conf, *conf.iterdir()):
        os.chown(path, desktop.uid, desktop.gid)
    audit = start_audit(client, desktop, out, options, ["baresip", "-f", str(conf)])
    name = audit.netns()
    ctrl(name, "dial", f"sip:bob@{PEER_ADDR}:{PEER_SIP}")
    for state, seconds in SCHEDULE:
        if state == "muted" or note.muted:  # "mute" toggles
            ctrl(name, "mute")
            note("mute" if state == "muted" else "unmute")
        time.sleep(seconds)
    ctrl(name, "quit")
    return audit.finish()


# --- the testbed's own labels, for the same clients and modes ------------------------------


TESTBED = {  # (client, mode) -> the testbed driver and its options
    ("chromium", "soft"): ("chromium", {"dtx": False}),
    ("chromium", "replace"): ("chromium", {"dtx": False}),
    ("chromium", "stop"): ("chromium", {"dtx": False}),
    ("baresip-pcmu", "ctrl"): ("baresip", {"codec": "pcmu"}),
    ("control-stops", "ctrl"): ("control", {"policy": "stops"}),
}


@pytest.fixture(scope="module")
def testbed_label(tone: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., str]:
    """The testbed's label of a (client, mode): a real session with the audits' schedule,
    run once per module."""
    root = tmp_path_factory.mktemp("testbed")
    labels: dict[tuple[str, str], str] = {}

    def label(app: str, mode: str) -> str:
        if (app, mode) not in labels:
            driver, options = TESTBED[(app, mode)]
            spec = SessionSpec(
                app=app,
                driver=driver,
                mode=mode,
                stimulus="tone",
                stimulus_path=str(tone),
                rep=1,
                schedule=[{"state": s, "seconds": d} for s, d in SCHEDULE],
                options=options,
                lead_s=0.5,
                tail_s=0.3,
            )
            out = root / app / mode
            manifest = run_session(spec, out)
            assert manifest["status"] == "ok", manifest.get("failure")
            reads = extract.read_mic_trace(out / "mic_trace.jsonl")
            segments = mute_segments(read_jsonl(out / "events.jsonl"))
            found = {w: label_policy(reads, segments, w, PolicyParams()) for w in ("os", "app")}
            labels[(app, mode)] = policy_of(found)[0]
        return labels[(app, mode)]

    return label


# --- what it must show ---------------------------------------------------------------------


@pytest.mark.parametrize(("client", "mode"), CLIENTS, ids=lambda v: str(v))
def test_the_audit_labels_each_client_as_the_testbed_does(
    client: str,
    mode: str,
    desk: Desktop,
    peer: Peer,
    testbed_label: Callable[..., str],
    tmp_path: Path,
) -> None:
    out = tmp_path / "audit"
    rc, said, verdict = run_client_audit(client, mode, desk, peer, out)
    assert rc == 0, said
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["source"] == "desktop" and manifest["status"] == "ok"
    assert verdict["policy"] == testbed_label(client, mode), said
    assert verdict["witnesses_agree"], said
    server = "os:pipewire-node" if desk.kind == "pipewire" else "os:pulse-stream"
    assert manifest["sound_server"] == server
    assert "POLICY WHILE MUTED" in said and str(out.resolve()) in said
    assert (out / "timeline.png").stat().st_size > 10_000
    assert {p.stat().st_uid for p in [out, *out.iterdir()]} == {desk.uid}  # handed over
    assert not [n for n in netns.names() if n.startswith(NETNS_PREFIX)]
    if client == "chromium":
        # with its sandbox on, every process it was injected into survived, and the audio
        # service was among them
        events = read_jsonl(out / "events.jsonl")
        assert not [e for e in events if e["event"] == "trace_error"]
        assert not [e for e in verdict["app_events"] if e.get("signal") == "SIGSEGV"]
        roles = {e.get("role") for e in events if e["event"] == "trace_attach"}
        assert "--type=utility --utility-sub-type=audio.mojom.AudioService" in roles
        # the page's telemetry is in clear: its level field is found, and it came in through
        # the uplink (NAT: the peer saw the host's address, never the namespace's)
        assert any(u["level_fields"] for u in verdict["uploads_clear"]), said
        assert f'{HOST_ADDR} "POST /telemetry' in peer.log.read_text()


# --- the person at the terminal, isolation, interruptions ------------------------------------

RECORDER = ["parec", "--raw", "/dev/null"]  # a plain libpulse recorder: reads continuously
PULSE_ONLY = pytest.mark.parametrize("desk", ["pulseaudio"], indirect=True)


def audit_env(desktop: Desktop) -> dict[str, str]:
    """What the audit sees of a person's session when run through sudo (see start_audit)."""
    return {
        **os.environ,
        **{k: v for k, v in desktop.env.items() if k not in ("HOME", "PATH")},
        "SUDO_UID": str(desktop.uid),
        "SUDO_GID": str(desktop.gid),
    }


def left_behind(desktop: Desktop) -> list[str]:
    """Whatever an audit made that still exists: namespaces, uplink veths and NAT tables, and
    processes of the desktop's user other than the desktop's own."""
    found = [n for n in netns.names() if n.startswith(NETNS_PREFIX)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [w for w in links.split() if w.startswith("rmu-")]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    found += [w for w in tables.split() if w.startswith("reallymuted_")]
    own = set(desktop.pids.values()) | netns.descendants(desktop.pids.values())
    users = subprocess.run(
        ["ps", "-u", str(desktop.uid), "-o", "pid=,comm="], capture_output=True, text=True
    ).stdout
    found += [line for line in users.splitlines() if int(line.split()[0]) not in own]
    return found


def tmux(socket_path: Path, *args: str) -> str:
    done = subprocess.run(
        ["tmux", "-S", str(socket_path), *args], capture_output=True, text=True, check=True
    )
    return done.stdout


def wait_screen(socket_path: Path, text: str, timeout: float = 40.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        screen = tmux(socket_path, "capture-pane", "-p", "-t", "audit")
        if text in screen:
            return screen
        assert time.monotonic() < deadline, f"{text!r} never shown:\n{screen}"
        time.sleep(0.2)


@PULSE_ONLY
def test_interactive_mode_through_tmux(desk: Desktop, tmp_path: Path) -> None:
    """A person in a terminal: m when they mute, u when they unmute, q to end; the screen shows
    the state and live counters, then the verdict."""
    out = tmp_path / "audit"
    socket_path = tmp_path / "tmux.sock"
    env = audit_env(desk)
    argv = [str(REALLYMUTED), "audit", "--interactive", "--app=parec", f"--out={out}"]
    argv += [f"--egress={_egress()}", f"--dns={PEER_ADDR}", f"--env=HOME={desk.env['HOME']}"]
    argv += ["--", *RECORDER]
    tmux(socket_path, "-f", "/dev/null", "new-session", "-d", "-s", "audit", "-x", "110",
         "-y", "45", "env", *[f"{k}={v}" for k, v in env.items()], *argv)  # fmt: skip
    try:
        tmux(socket_path, "set-option", "-t", "audit", "remain-on-exit", "on")
        screen = wait_screen(socket_path, "you are      unmuted")
        assert "press m when you mute" in screen
        deadline = time.monotonic() + 20
        while "0 microphone reads" in tmux(socket_path, "capture-pane", "-p", "-t", "audit"):
            assert time.monotonic() < deadline, "the app's reads never showed"
            time.sleep(0.2)
        time.sleep(2)
        tmux(socket_path, "send-keys", "-t", "audit", "m")
        screen = wait_screen(socket_path, "you are      MUTED")
        assert "sound server feeding the app" in screen
        time.sleep(4)
        tmux(socket_path, "send-keys", "-t", "audit", "u")
        wait_screen(socket_path, "you are      unmuted")
        time.sleep(2)
        tmux(socket_path, "send-keys", "-t", "audit", "q")
        verdict_screen = wait_screen(socket_path, "evidence:", timeout=60)
    finally:
        subprocess.run(["tmux", "-S", str(socket_path), "kill-server"], check=False)
    assert "POLICY WHILE MUTED: continuous" in verdict_screen
    assert "ended: the person pressed q" in verdict_screen
    events = read_jsonl(out / "events.jsonl")
    keys = [(e["event"], e.get("via")) for e in events if e["event"] in ("mute", "unmute")]
    assert keys == [("mute", "key"), ("unmute", "key")]
    verdict = json.loads((out / "verdict.json").read_text())
    muted = next(s for s in verdict["states"] if s["state"] == "muted")
    assert muted["app_reads_per_s"] > 20 and muted["os_read_share"] > 0.9
    assert not left_behind(desk)


SENDER = textwrap.dedent(
    """
    import socket, subprocess, sys, time
    recorder = subprocess.Popen(sys.argv[2:])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(int(sys.argv[1])):
        s.sendto(b"sent-by-the-app", ("PEER", 9998))
        time.sleep(0.1)
    recorder.terminate()
    recorder.wait()
    """
).replace("PEER", PEER_ADDR)


@PULSE_ONLY
def test_only_the_apps_packets_are_captured_and_they_leave_through_the_uplink(
    desk: Desktop, peer: Peer, tmp_path: Path
) -> None:
    out = tmp_path / "audit"
    timeline = out.parent / "events.jsonl"
    timeline.write_text("")
    app = ["/usr/bin/python3", "-c", SENDER, "60", *RECORDER]
    audit = start_audit("sender", desk, out, [f"--events={timeline}"], app)
    name = audit.netns()
    links = subprocess.run(["ip", "-n", name, "-o", "link"], capture_output=True, text=True)
    assert sorted(line.split(":")[1].strip().split("@")[0] for line in links.stdout.splitlines()) \
        == ["lo", "uplink0"]  # fmt: skip
    routes = subprocess.run(["ip", "-n", name, "route"], capture_output=True, text=True).stdout
    assert routes.startswith("default via 10.231.") and "dev uplink0" in routes
    # another program of the same machine talks to the same peer meanwhile
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(30):
        other.sendto(b"sent-by-another-program", (PEER_ADDR, 9999))
        time.sleep(0.1)
    rc, said, _ = audit.finish()
    assert rc == 0, said
    fields = subprocess.run(
        ["tshark", "-r", str(out / "traffic.pcapng"), "-T", "fields", "-e", "ip.src", "-e",
         "udp.dstport", "-Y", "udp and not icmp"],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")  # fmt: skip
    pairs = {tuple(line.split("\t")) for line in fields if line}
    address = json.loads((out / MANIFEST).read_text())["client"]["address"]
    assert (address, "9998") in pairs
    assert not [p for p in pairs if p[1] == "9999" or p[0] != address]
    assert f"{PEER_ADDR}:9998" in said  # a destination of the verdict
    assert not left_behind(desk)


@PULSE_ONLY
def test_ctrl_c_still_writes_the_evidence_and_leaves_nothing(desk: Desktop, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    timeline = out.parent / "events.jsonl"
    timeline.write_text("")
    audit = start_audit("parec", desk, out, [f"--events={timeline}"], RECORDER)
    audit.netns()
    time.sleep(4)  # let it record a little
    audit.proc.send_signal(signal.SIGINT)
    rc, said, verdict = audit.finish()
    assert rc == 0, said
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["ended_by"].startswith("interrupted (SIGINT)")
    assert "ended: interrupted (SIGINT)" in said
    assert {"events.jsonl", "mic_trace.jsonl", "traffic.pcapng", "client.log"} <= {
        p.name for p in out.iterdir()
    }
    assert any(r["api"].startswith("pulse:") for r in read_jsonl(out / "mic_trace.jsonl"))
    assert verdict["app_events"][0]["event"] == "stop_requested"
    assert not left_behind(desk)


CRASHER = textwrap.dedent(
    """
    import ctypes, subprocess, sys, time
    # the recorder forks away: a session of its own, and it outlives this launcher
    subprocess.Popen(sys.argv[1:], start_new_session=True)
    time.sleep(3)
    ctypes.string_at(0)  # a real segmentation fault
    """
)


@PULSE_ONLY
def test_an_app_that_crashes_after_forking_away_is_followed_to_the_end(
    desk: Desktop, tmp_path: Path
) -> None:
    out = tmp_path / "audit"
    timeline = out.parent / "events.jsonl"
    timeline.write_text("")
    app = ["/usr/bin/python3", "-c", CRASHER, *RECORDER]
    audit = start_audit("crasher", desk, out, [f"--events={timeline}", "--duration=7"], app)
    rc, said, verdict = audit.finish()
    assert rc == 0, said
    exits = {e["event"]: e for e in verdict["app_events"] if e["event"].endswith("_exit")}
    assert len([e for e in verdict["app_events"] if e["event"] == "orphan_exit"]) == 1
    assert exits["app_exit"]["signal"] == "SIGSEGV"
    crashed_at = exits["app_exit"]["t"]
    assert "app_exit" in said and "SIGSEGV" in said
    # the recorder kept being traced after its launcher crashed, until the audit stopped it
    reads = [r for r in read_jsonl(out / "mic_trace.jsonl") if r["api"].startswith("pulse:")]
    assert max(r["t"] for r in reads) > crashed_at + 2
    stopped = next(e for e in verdict["app_events"] if e["event"] == "stop_requested")
    assert stopped["pids"] == [exits["orphan_exit"]["pid"]]  # the audit stopped it, at the end
    assert json.loads((out / MANIFEST).read_text())["ended_by"].startswith("the duration")
    assert not left_behind(desk)


@PULSE_ONLY
def test_attaching_to_a_running_app_records_it_and_leaves_it_running(
    desk: Desktop, tmp_path: Path
) -> None:
    recorder = desk.start("parec-running", RECORDER)
    try:
        time.sleep(1)
        out = tmp_path / "audit"
        timeline = out.parent / "events.jsonl"
        timeline.write_text("")
        env = audit_env(desk)
        argv = [str(REALLYMUTED), "audit", f"--pid={recorder.pid}", f"--out={out}"]
        argv += [f"--events={timeline}", "--duration=5", f"--env=HOME={desk.env['HOME']}"]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, done.stdout + done.stderr
        manifest = json.loads((out / MANIFEST).read_text())
        assert manifest["isolated"] is False and manifest["netns"] is None
        assert "the capture holds the whole host's traffic" in done.stdout
        reads = read_jsonl(out / "mic_trace.jsonl")
        assert any(r["api"] == "pulse:pa_stream_peek" and r["pid"] == recorder.pid for r in reads)
        assert any(r["api"] == "os:pulse-stream" and r["bytes"] for r in reads)
        assert recorder.poll() is None  # not ours to stop
    finally:
        desk.stop("parec-running")
