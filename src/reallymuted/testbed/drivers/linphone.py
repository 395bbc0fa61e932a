"""linphonec (liblinphone, SIP/RTP): a call to the same auto-answering baresip peer.

linphonec records through its native PulseAudio backend (the session's default source), binds
SIP and RTP to fixed ports, and takes its commands on stdin, one per line: ``ipv6 disable``
(otherwise it advertises an IPv6 address the peer refuses), ``call``, ``mute``/``unmute``,
``terminate``, ``quit``. It answers each with output ending in its ``linphonec>`` prompt;
``call`` is confirmed by "... connected." and ``terminate`` by "... ended". The stdin pipe is
the harness's control channel: nothing of it reaches the network.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

from reallymuted.testbed.drivers import Driver, DriverError
from reallymuted.testbed.drivers.baresip import PEER, start_peer, wait_ready

PROMPT = "linphonec> "
CLIENT = {"sip": 5070, "rtp": (20020, 20029)}

RC = f"""[sip]
sip_port={CLIENT["sip"]}
[rtp]
audio_rtp_port={CLIENT["rtp"][0]}-{CLIENT["rtp"][1]}
[sound]
echocancellation=0
[video]
enabled=0
capture=0
display=0
"""


class LinphoneDriver(Driver):
    name = "linphone"
    modes = ("ctrl",)
    programs = ("linphonec", "baresip")

    @classmethod
    def version(cls, options: Mapping[str, Any]) -> str:
        out = subprocess.run(["linphonec", "-v"], capture_output=True, text=True, check=False)
        words = (out.stdout + out.stderr).split()
        return f"linphonec {words[-1]}" if words else "unknown"

    def endpoints(self) -> dict[str, Any]:
        return {
            "client": {"sip": f"127.0.0.1:{CLIENT['sip']}", "rtp_ports": list(CLIENT["rtp"])},
            "peer": {"sip": f"127.0.0.1:{PEER['sip']}", "rtp_ports": list(PEER["rtp"])},
            "harness": {"stdin": "linphonec commands"},
        }

    def client_traffic(self) -> dict[str, Any]:
        low, high = CLIENT["rtp"]
        return {"ports": [CLIENT["sip"], *range(low, high + 1)]}

    def start(self) -> None:
        home = self.ctx.workdir / "linphone-home"
        (home / ".local/share/linphone").mkdir(parents=True, exist_ok=True)  # its call database
        rc = self.ctx.workdir / "linphonerc"
        rc.write_text(RC)
        self.peer = start_peer(self)
        self.output = ""
        self.cond = threading.Condition()
        self.log_fh = self.log_file("linphonec").open("w", buffering=1)
        self.proc = self.ctx.procs.start(
            "client",
            ["linphonec", "-c", str(rc), "-d", "0"],
            env=dict(self.ctx.env, HOME=str(home)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=self._pump, args=(self.proc.popen.stdout,))
        self.reader.daemon = True
        self.reader.start()

    def _pump(self, stream: IO[str]) -> None:
        # Read characters, not lines: the prompt has no newline.
        for char in iter(lambda: stream.read(1), ""):
            self.log_fh.write(char)
            with self.cond:
                self.output += char
                self.cond.notify_all()

    def _expect(self, text: str, since: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while text not in self.output[since:]:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.returncode() is not None:
                    tail = self.output[since:][-200:]
                    raise DriverError(f"linphonec: no {text!r} within {timeout:.0f} s: {tail!r}")
                self.cond.wait(min(left, 0.1))

    def command(
        self, command: str, expect: str = PROMPT, timeout: float = 5.0, prompt: bool = True
    ) -> None:
        """Send one command; wait for ``expect`` and (if ``prompt``) for the next prompt."""
        assert self.proc.popen.stdin is not None
        with self.cond:
            since = len(self.output)
        try:
            self.proc.popen.stdin.write(command + "\n")
            self.proc.popen.stdin.flush()
        except BrokenPipeError:
            raise DriverError("linphonec is not running") from None
        self._expect(expect, since, timeout)
        if prompt and expect != PROMPT:
            self._expect(PROMPT, since, timeout)

    def prepare(self) -> None:
        wait_ready(dict(self.logs)["peer"], self.peer, "peer")
        self._expect(PROMPT, 0, timeout=15.0)
        self.command("ipv6 disable", expect="ipv6 use disabled")
        self.command(f"ports sip {CLIENT['sip']}")
        self.command("soundcard show", expect="Capture device")

    def trace_roots(self) -> list[int]:
        return [self.proc.pid]

    def join(self) -> dict[str, Any]:
        self.command(f"call sip:bob@127.0.0.1:{PEER['sip']}", expect="connected.", timeout=10.0)
        return {"peer_uri": f"sip:bob@127.0.0.1:{PEER['sip']}"}

    def set_muted(self, muted: bool) -> dict[str, Any]:
        # linphonec confirms nothing but its prompt; the mute is visible in the evidence.
        self.command("mute" if muted else "unmute")
        return {}

    def leave(self) -> dict[str, Any]:
        self.command("terminate", expect="ended")
        return {}

    def stop(self) -> None:
        if self.proc.returncode() is None:
            try:
                self.command("quit", expect="Terminating", prompt=False)
                self.proc.popen.wait(3.0)
            except (DriverError, subprocess.TimeoutExpired, OSError):
                pass
        super().stop()
        self.reader.join(1.0)
        self.log_fh.close()
