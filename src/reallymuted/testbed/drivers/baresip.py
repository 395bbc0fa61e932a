"""baresip (SIP/RTP): a call from the client under test to a local auto-answering peer.

Two baresip instances run in the session's namespace: the **client** ("alice", traced, its
microphone is the session's PulseAudio source through ALSA's pulse plugin, since this build has
no native pulse module) calls the **peer** ("bob", answers automatically, sends a sine; not
traced). Both bind to 127.0.0.1 only (``net_interface``), with fixed SIP and RTP ports listed
in the manifest's endpoints so analysis can tell the client's RTP from the peer's.

The client is driven through its ``ctrl_tcp`` module (netstring-framed JSON): ``dial``,
``mute`` (a toggle — the reply says ``call muted`` or ``call un-muted``, which we check),
``hangup``, ``quit``. The control port is the harness's channel and is kept out of the capture.
Options: ``codec`` (``opus`` or ``pcmu``), ``dtx`` (Opus DTX, default off).
"""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reallymuted.testbed.drivers import Driver, DriverError
from reallymuted.testbed.netns import Managed

MODULES = Path("/usr/lib/baresip/modules")
CODECS = {"opus": ("opus/48000/2", 48000), "pcmu": ("PCMU", 8000)}
CLIENT = {"sip": 5060, "rtp": (20000, 20009), "ctrl": 4444}
PEER = {"sip": 5062, "rtp": (20010, 20019)}


def _config(
    sip_port: int,
    rtp: tuple[int, int],
    source: str,
    rate: int,
    channels: int,
    apps: list[str],
    extra: list[str],
) -> str:
    lines = [
        "poll_method epoll",
        f"sip_listen 127.0.0.1:{sip_port}",
        "net_interface 127.0.0.1",  # not "lo": baresip wants an address
        f"audio_source {source}",
        "audio_player aubridge,nil",  # nothing is played: no speaker on the testbed
        "audio_alert aubridge,nil",
        f"ausrc_srate {rate}",
        f"auplay_srate {rate}",
        f"ausrc_channels {channels}",
        f"auplay_channels {channels}",
        f"rtp_ports {rtp[0]}-{rtp[1]}",
        "rtp_stats yes",
        f"module_path {MODULES}",
        "module g711.so",
        "module opus.so",
        "module alsa.so",
        "module ausine.so",
        "module aubridge.so",
        "module_tmp account.so",
        *[f"module_app {a}" for a in apps],
        *extra,
        "",
    ]
    return "\n".join(lines)


def write_config(directory: Path, config: str, account: str) -> Path:
    """A baresip configuration directory (``baresip -f DIR``) with one account."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config").write_text(config)
    (directory / "accounts").write_text(account + "\n")
    (directory / "contacts").write_text("")
    return directory


def start_peer(driver: Driver, extra: list[str] | None = None) -> Managed:
    """The far end of a call: baresip answering automatically, sending a sine, not traced.

    Its output is the ``peer`` section of client.log; other SIP drivers call it too.
    """
    peer_dir = write_config(
        driver.ctx.workdir / "baresip-peer",
        _config(PEER["sip"], PEER["rtp"], "ausine,440", 48000, 2, ["menu.so"], extra or []),
        f"<sip:bob@127.0.0.1:{PEER['sip']}>;regint=0;answermode=auto;"
        f"audio_codecs={CODECS['opus'][0]},{CODECS['pcmu'][0]}",
    )
    env = dict(driver.ctx.env, HOME=str(driver.ctx.workdir))
    return driver.start_process("peer", ["baresip", "-f", str(peer_dir)], "peer", env=env)


def wait_ready(path: Path, managed: Managed, label: str, timeout: float = 15.0) -> None:
    """Wait for baresip's "baresip is ready." in its log."""
    deadline = time.monotonic() + timeout
    while b"baresip is ready" not in path.read_bytes():
        if managed.returncode() is not None:
            raise DriverError(f"baresip {label} exited during start-up")
        if time.monotonic() > deadline:
            raise DriverError(f"baresip {label} not ready within {timeout:.0f} s")
        time.sleep(0.02)


class _CtrlTcp:
    """A ctrl_tcp connection: netstring-framed JSON commands, replies and events."""

    def __init__(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=1.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(None)
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.token = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b":" in buffer:
                length, _, rest = buffer.partition(b":")
                if len(rest) < int(length) + 1:
                    break
                message = json.loads(rest[: int(length)])
                buffer = rest[int(length) + 1 :]  # skip the trailing ","
                (self.events if message.get("event") else self.replies).put(message)

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        self.token += 1
        body = json.dumps({"command": command, "params": params, "token": str(self.token)})
        data = body.encode()
        self.sock.sendall(b"%d:%s," % (len(data), data))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                reply = self.replies.get(timeout=0.05)
            except queue.Empty:
                continue
            if reply.get("token") == str(self.token):
                return reply
        raise DriverError(f"baresip: no reply to {command!r} within {timeout:.0f} s")

    def wait_event(self, kinds: tuple[str, ...], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.05)
            except queue.Empty:
                continue
            if event.get("type") in kinds:
                return event
        raise DriverError(f"baresip: no {'/'.join(kinds)} event within {timeout:.0f} s")

    def close(self) -> None:
        self.sock.close()


class BaresipDriver(Driver):
    name = "baresip"
    modes = ("ctrl",)
    programs = ("baresip",)

    @classmethod
    def check(cls, mode: str, options: Mapping[str, Any]) -> None:
        super().check(mode, options)
        if options.get("codec", "opus") not in CODECS:
            raise ValueError(f"baresip: codec must be one of {', '.join(CODECS)}")

    @classmethod
    def version(cls, options: Mapping[str, Any]) -> str:
        out = subprocess.run(["baresip", "-h"], capture_output=True, text=True, check=False)
        first = (out.stdout or out.stderr).splitlines()
        return first[0].split(" Copyright")[0].strip() if first else "unknown"

    def capture_filter(self) -> str:
        return f"not (tcp port {CLIENT['ctrl']})"

    def endpoints(self) -> dict[str, Any]:
        return {
            "client": {"sip": f"127.0.0.1:{CLIENT['sip']}", "rtp_ports": list(CLIENT["rtp"])},
            "peer": {"sip": f"127.0.0.1:{PEER['sip']}", "rtp_ports": list(PEER["rtp"])},
            "harness": {"ctrl_tcp": f"127.0.0.1:{CLIENT['ctrl']}"},
        }

    def client_traffic(self) -> dict[str, Any]:
        low, high = CLIENT["rtp"]
        # baresip sends RTCP on RTP port + 1 (no rtcp-mux): both are in the range.
        return {"ports": [CLIENT["sip"], *range(low, high + 1)]}

    def start(self) -> None:
        codec, rate = CODECS[self.ctx.options.get("codec", "opus")]
        dtx = "yes" if self.ctx.options.get("dtx") else "no"
        # (No opus_stereo setting: "opus_stereo no" renames the codec opus/48000/1, which the
        # accounts' opus/48000/2 then silently fails to match, and the call falls to PCMU.)
        opus = [f"opus_dtx {dtx}"]
        client_dir = write_config(
            self.ctx.workdir / "baresip-client",
            _config(
                CLIENT["sip"],
                CLIENT["rtp"],
                "alsa,pulse",
                rate,
                1,
                ["menu.so", "ctrl_tcp.so"],
                [*opus, f"ctrl_tcp_listen 127.0.0.1:{CLIENT['ctrl']}"],
            ),
            f"<sip:alice@127.0.0.1:{CLIENT['sip']}>;regint=0;audio_codecs={codec}",
        )
        env = dict(self.ctx.env, HOME=str(self.ctx.workdir))
        self.peer = start_peer(self, opus)
        self.client = self.start_process(
            "client", ["baresip", "-f", str(client_dir)], "baresip", env=env
        )

    def prepare(self) -> None:
        logs = dict(self.logs)
        wait_ready(logs["peer"], self.peer, "peer")
        wait_ready(logs["baresip"], self.client, "client")
        self.ctrl = _CtrlTcp(CLIENT["ctrl"], timeout=10.0)

    def trace_roots(self) -> list[int]:
        return [self.client.pid]

    def join(self) -> dict[str, Any]:
        reply = self.ctrl.command("dial", f"sip:bob@127.0.0.1:{PEER['sip']}")
        if not reply.get("ok"):
            raise DriverError(f"baresip dial failed: {reply}")
        event = self.ctrl.wait_event(("CALL_ESTABLISHED", "CALL_CLOSED"), timeout=10.0)
        if event["type"] != "CALL_ESTABLISHED":
            raise DriverError(f"baresip call not established: {event}")
        return {"peer_uri": event.get("peeruri"), "codec": self.ctx.options.get("codec", "opus")}

    def set_muted(self, muted: bool) -> dict[str, Any]:
        # "mute" toggles; the reply text says which state it reached.
        for _attempt in range(2):
            reply = self.ctrl.command("mute")
            text = str(reply.get("data", ""))
            state = "un-muted" not in text and "muted" in text
            if state == muted:
                return {"reply": text.strip()}
        raise DriverError(f"baresip did not reach muted={muted}: {reply}")

    def leave(self) -> dict[str, Any]:
        self.ctrl.command("hangup")
        event = self.ctrl.wait_event(("CALL_CLOSED",), timeout=5.0)
        return {"reason": event.get("param")}

    def stop(self) -> None:
        ctrl = getattr(self, "ctrl", None)
        if ctrl is not None:
            try:
                ctrl.command("quit", timeout=2.0)
                self.client.popen.wait(3.0)
            except (DriverError, OSError, subprocess.TimeoutExpired):
                pass
            ctrl.close()
        super().stop()
