"""``reallymuted audit``: the instrument around an app on a person's own Linux desktop.

Run as root (through sudo) from the person's desktop session. The audit records, into an
evidence folder of the same contract as a testbed session (docs/evidence.md), with ``source`` =
``desktop``:

* the app, started as the invoking user (their uid and groups, display, sound server, D-Bus
  session, home) by :mod:`reallymuted.testbed.reaper` inside a network namespace of its own
  whose only way out is a NAT uplink (:mod:`reallymuted.testbed.uplink`), so the app works as
  usual; ``--pid`` attaches to an app already running instead (no namespace, so its packets
  cannot be told from the rest of the host's: the manifest says ``isolated: false``);
* ``traffic.pcapng``: dumpcap on the namespace's uplink interface, inside the namespace: every
  packet the app sends out and nothing of the user's other programs;
* ``mic_trace.jsonl``: the app-side witness (the Frida tracer, :mod:`reallymuted.testbed.tracing`,
  in every process of the app's tree: libpulse, ALSA and PipeWire reads) and the OS-side witness
  (:mod:`reallymuted.testbed.soundserver`, polling the app's capture streams on the user's
  PulseAudio or PipeWire server);
* ``events.jsonl``: the mute timeline (:mod:`reallymuted.testbed.timeline`: keys pressed by the
  person, hotkeys sent on a schedule, or a file of events made elsewhere), ``join`` when the app
  first opened the microphone, ``leave`` when the audit stopped, and what happened to the app
  (exits, crashes, processes that outlived it);
* ``client.log`` and ``manifest.json`` (how the audit ended, the user, the server, the uplink).

However it ends (the timeline's end, q, Ctrl-C or SIGTERM, the app exiting or crashing), what
was recorded is published and everything the audit made is removed: its processes (by PID),
the namespace, the uplink's veth, NAT table and resolv.conf.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reallymuted.io import read_jsonl, write_json
from reallymuted.paths import MANIFEST
from reallymuted.testbed import capture, netns, uplink
from reallymuted.testbed.contract import EventLog, describe_exit, utc, write_lines
from reallymuted.testbed.timeline import Timeline, recorded_events
from reallymuted.testbed.user import AuditProblem, DesktopUser

log = logging.getLogger("reallymuted.testbed.desktop")

SOURCE = "desktop"
NETNS_PREFIX = "rmaudit-"
STATUS = "audit.status.json"
REAPER = Path(__file__).with_name("reaper.py")  # while an audit runs: its namespace, PIDs and step
# Chromium-based apps (Chromium, Electron clients) capture in the audio service. These
# processes never open an audio device, and Frida cannot be injected into them with their
# sandbox on (the storage service: "bootstrapper failed"; the broker crashed), so they are
# not traced: a person's browser must not lose a process to the audit.
CHROMIUM_SKIP = (
    "--type=renderer",
    "--type=gpu-process",
    "--type=zygote",
    "--type=broker",
    "storage.mojom.StorageService",
)
# client.log: one section per part's log
LOG_SECTIONS = (
    ("app", "app.log"),
    ("tracer", "tracer.log"),
    ("os witness", "witness.log"),
    ("capture", "capture.log"),
)


@dataclass
class AuditPlan:
    """What to audit and how (the command line of ``reallymuted audit``, checked)."""

    out: Path
    app: str
    mode: str
    user: DesktopUser
    command: list[str] = field(default_factory=list)
    pid: int | None = None  # attach to a running app instead of starting one
    egress: str | None = None  # host interface of the uplink (default: the default route's)
    dns: list[str] = field(default_factory=list)
    skip: tuple[str, ...] = CHROMIUM_SKIP
    poll_s: float = 0.1  # the OS witness's poll interval
    capture_tool: str = "dumpcap"
    passthrough_stdin: bool = True  # the app keeps the terminal's stdin (not --interactive)

    @property
    def isolated(self) -> bool:
        return self.pid is None


class AuditRecorder:
    """One audit: starts the parts, hands the live audit to a timeline, stops, publishes."""

    def __init__(self, plan: AuditPlan) -> None:
        self.plan = plan
        self.stage = Path(tempfile.mkdtemp(prefix="rm-audit-"))
        self.parts = self.stage / "parts"
        self.logs = self.stage / "logs"
        for folder in (self.parts, self.logs):
            folder.mkdir()
        self.procs = netns.ProcessSet(self.stage / "pids.jsonl")
        self.netns = f"{NETNS_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.t0 = time.monotonic()
        self.epoch0 = time.time()
        self.events = EventLog(self.parts / "events.audit.jsonl", self.t0)
        self.facts: dict[str, Any] = {"netns": None, "uplink": None}
        self.roots: list[int] = []
        self.step = "preflight"
        self.ended_by = ""

    # -- what the timeline sees ---------------------------------------------------------------
    @property
    def app(self) -> str:
        return self.plan.app

    @property
    def user(self) -> DesktopUser:
        return self.plan.user

    def now(self) -> float:
        return time.monotonic() - self.t0

    def event(self, name: str, **fields: Any) -> float:
        return self.events(name, **fields)

    def app_gone(self) -> str | None:
        """Why the app is no longer running (None while it runs)."""
        if self.plan.pid is not None:
            return None if netns.alive(self.plan.pid) else f"process {self.plan.pid} exited"
        reaper = self.procs.get("app")
        if reaper is None or reaper.returncode() is None:
            return None
        exits = [e for e in self._reaper_events() if e["event"] == "app_exit"]
        how = exits[0] if exits else {}
        said = how.get("signal") or f"status {how.get('returncode', reaper.returncode())}"
        return f"the app and every process it started exited (the command: {said})"

    def _reaper_events(self) -> list[dict[str, Any]]:
        path = self.parts / "reaper.jsonl"
        return read_jsonl(path) if path.exists() else []

    def counters(self) -> dict[str, Any]:
        """Live counters for the screen: app reads, the OS witness's last poll, bytes sent."""
        found: dict[str, Any] = {"reads": _count_lines(self.parts / "mic_app.jsonl")}
        last = _last_line(self.parts / "mic_os.jsonl")
        found["os_reading"] = None if last is None else bool(last.get("bytes"))
        found["os_streams"] = [] if last is None else last.get("streams", [])
        host_if = (self.facts.get("uplink") or {}).get("host_if")
        if host_if:  # what the namespace sent is what its host-side veth received
            stats = Path(f"/sys/class/net/{host_if}/statistics")
            with contextlib.suppress(OSError):
                found["bytes_sent"] = int((stats / "rx_bytes").read_text())
                found["packets_sent"] = int((stats / "rx_packets").read_text())
        return found

    # -- steps --------------------------------------------------------------------------------
    def status(self, step: str) -> None:
        self.step = step
        write_json(
            self.plan.out / STATUS,
            {"step": step, "netns": self.facts["netns"], "roots": self.roots, "pid": os.getpid()},
        )

    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise AuditProblem(
                "the audit needs root (namespace, capture, ptrace): run it with sudo"
            )
        tools = ["ip", "nft", "setpriv", self.plan.capture_tool]
        missing = [tool for tool in tools if shutil.which(tool) is None]
        if missing:
            raise AuditProblem(f"missing program(s) {', '.join(missing)}: run `make setup`")
        if self.plan.pid is not None and not netns.alive(self.plan.pid):
            raise AuditProblem(f"no process {self.plan.pid} to attach to")
        netns.remove_stale(NETNS_PREFIX)

    def start_network(self) -> None:
        self.status("network")
        netns.create(self.netns)
        self.facts["netns"] = self.netns
        options: dict[str, Any] = {"dns": self.plan.dns} if self.plan.dns else {}
        if self.plan.egress:
            options["egress"] = self.plan.egress
        self.facts["uplink"] = uplink.attach(self.netns, options)
        self.event("uplink_up", **self.facts["uplink"])

    def in_netns(self, argv: list[str]) -> list[str]:
        return [*netns.exec_prefix(self.netns), *argv] if self.plan.isolated else argv

    def start_capture(self) -> None:
        self.status("capture")
        out = self.parts / "traffic.pcapng"
        interface = uplink.NS_IF if self.plan.isolated else "any"
        argv = capture.capture_command(self.plan.capture_tool, out, interface=interface)
        proc = self.procs.start(
            "capture",
            self.in_netns(argv),
            output=self.logs / "capture.log",
            stop_signal=signal.SIGINT,
        )
        capture.wait_capture_ready(out, lambda: proc.returncode() is None)
        self.facts["capture_interface"] = interface
        self.event("capture_start", pid=proc.pid, interface=interface, isolated=self.plan.isolated)

    def start_app(self) -> None:
        self.status("app")
        if self.plan.pid is not None:
            self.roots = [self.plan.pid]
            self.event("client_attach", pids=self.roots)
            return
        user = self.plan.user
        # The reaper is run as a script (standard library only): the app inherits exactly the
        # person's session, not this Python's search path.
        argv = [sys.executable, str(REAPER), f"--uid={user.uid}", f"--gid={user.gid}"]
        argv += [f"--events={self.parts / 'reaper.jsonl'}", "--", *self.plan.command]
        stdin = None if self.plan.passthrough_stdin else subprocess.DEVNULL
        app = self.procs.start(
            "app", self.in_netns(argv), env=user.env, stdin=stdin, output=self.logs / "app.log"
        )
        self.roots = [app.pid]
        self.event("client_start", pids=self.roots, argv=self.plan.command, uid=user.uid)

    def start_witnesses(self) -> None:
        self.status("witnesses")
        tmp = self.stage / "tmp"
        tmp.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "reallymuted.testbed.tracing", "--t0", repr(self.t0)]
        argv += ["--out", str(self.parts / "mic_app.jsonl")]
        argv += ["--events", str(self.parts / "events.tracer.jsonl")]
        argv += ["--status", str(self.parts / "tracer.status.json")]
        argv += [a for root in self.roots for a in ("--root", str(root))]
        argv += [f"--skip={pattern}" for pattern in self.plan.skip]
        tracer = self.procs.start(
            "tracer",
            self.in_netns(argv),
            stdout=subprocess.PIPE,
            output=self.logs / "tracer.log",
            text=True,
            env={**os.environ, "TMPDIR": str(tmp), "HOME": str(tmp)},
        )
        ready = select.select([tracer.popen.stdout], [], [], 30.0)[0] if tracer.popen.stdout else []
        if not ready or not tracer.popen.stdout.readline():
            raise AuditProblem(f"the tracer did not start: it {describe_exit(tracer.returncode())}")
        # The OS witness opens its file as root, then becomes the user to reach their server.
        user = self.plan.user
        argv = [sys.executable, "-m", "reallymuted.testbed.soundserver", "watch"]
        argv += ["--out", str(self.parts / "mic_os.jsonl"), "--t0", repr(self.t0)]
        argv += ["--interval", str(self.plan.poll_s), f"--user={user.uid}"]
        argv += [a for root in self.roots for a in ("--root", str(root))]
        env = {**user.env, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.procs.start("os-witness", argv, env=env, output=self.logs / "witness.log")
        self.event("witnesses_start", tracer=tracer.pid, skip=list(self.plan.skip))

    def check(self) -> None:
        """Fail if one of our own parts (capture, tracer, witness) died unasked."""
        for managed in self.procs.dead():
            if managed.role != "app":
                raise AuditProblem(f"{managed.role} {describe_exit(managed.returncode())}")

    # -- the end --------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop in an order that loses nothing: tracer (drains its agents), app, witness,
        capture (once it holds the app's last packets); then remove the namespace and the uplink."""
        self.status("stop")
        self.event("leave", ended_by=self.ended_by)
        for role, timeout in (("tracer", 10.0), ("app", 8.0), ("os-witness", 3.0)):
            managed = self.procs.get(role)
            if managed is not None:
                self.procs.stop(managed, timeout=timeout)
        self.event("client_stop")
        client_gone = time.monotonic()
        capture_proc, waited = self.procs.get("capture"), 0.0
        if capture_proc is not None:
            waited = capture.wait_last_block(client_gone)  # the app's last packets are kept
            self.procs.stop(capture_proc, timeout=5.0)
        self.event("capture_stop", waited_s=round(waited, 3))
        self.event("session_end")
        self.events.close()

    def clean_up(self) -> dict[str, Any]:
        """Remove everything this audit made, whatever state it is in."""
        cleanup: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            self.procs.stop_all(timeout=2.0)
        cleanup["killed_from_registry"] = netns.reap_registry(self.stage / "pids.jsonl")
        if self.facts.get("uplink") is not None or self.facts["netns"]:
            cleanup["uplink_removed"] = uplink.detach(self.netns, self.facts.get("uplink") or {})
        if self.facts["netns"]:
            # Frida's injection helper daemonises and outlives the tracer: whatever is left in
            # the namespace now was started by our tools, and is stopped here, by PID
            cleanup["strays_stopped"] = [
                {"pid": pid, "comm": _comm(pid)} for pid in netns.pids(self.netns)
            ]
            for stray in cleanup["strays_stopped"]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(stray["pid"], signal.SIGKILL)
            cleanup["killed_in_netns"] = netns.destroy(self.netns)
            cleanup["netns_removed"] = self.netns not in netns.names()
        (self.plan.out / STATUS).unlink(missing_ok=True)
        return cleanup

    def publish(self, cleanup: Mapping[str, Any], failure: str | None) -> dict[str, Any]:
        """The evidence files and the manifest, into the output folder (owned by the user)."""
        out = self.plan.out
        runner = read_jsonl(self.parts / "events.audit.jsonl")
        reaper = [
            {"t": round(row["monotonic"] - self.t0, 6), **row} for row in self._reaper_events()
        ]
        tracer = _read_part(self.parts / "events.tracer.jsonl")
        tracer += _read_part(self.parts / "events.file.jsonl")
        mic_os = _read_part(self.parts / "mic_os.jsonl")
        mic_app = _read_part(self.parts / "mic_app.jsonl")
        opened = [r["t"] for r in mic_app] + [r["t"] for r in mic_os if r.get("streams")]
        events = recorded_events(runner + reaper + tracer, min(opened) if opened else None)
        write_lines(out / "events.jsonl", events)
        write_lines(out / "mic_trace.jsonl", sorted(mic_os + mic_app, key=lambda r: r["t"]))
        with (out / "client.log").open("wb") as fh:
            for label, name in LOG_SECTIONS:
                fh.write(f"==> {label} <==\n".encode())
                with contextlib.suppress(OSError):
                    fh.write((self.logs / name).read_bytes())
        pcap = self.parts / "traffic.pcapng"
        if pcap.exists():
            shutil.copyfile(pcap, out / "traffic.pcapng")
        manifest = self.manifest(events, cleanup, failure, opened)
        write_json(out / MANIFEST, manifest)
        hand_over(out, self.plan.user)
        return manifest

    def manifest(
        self,
        events: list[dict[str, Any]],
        cleanup: Mapping[str, Any],
        failure: str | None,
        opened: list[float],
    ) -> dict[str, Any]:
        plan = self.plan
        end_t = next((e["t"] for e in events if e["event"] == "session_end"), self.now())
        server = _last_line(self.parts / "mic_os.jsonl") or {}
        return {
            "schema": 1,
            "status": "failed" if failure else "ok",
            "failure": failure,
            "ended_by": self.ended_by,
            "source": SOURCE,
            "app": plan.app,
            "driver": "desktop",
            "mode": plan.mode,
            "condition": "desktop",
            "rep": 1,
            "options": {"command": plan.command, "pid": plan.pid, "skip": list(plan.skip)},
            "stimulus": {"name": "", "path": None, "sha256": None},
            "start": {"utc": utc(self.epoch0), "epoch": self.epoch0, "monotonic": self.t0},
            "end": {"utc": utc(self.epoch0 + end_t), "t": end_t},
            "start_epoch": self.epoch0,
            "clock": "t = seconds since start.monotonic (CLOCK_MONOTONIC); pcapng time ts is at "
            "t = ts - start.epoch",
            "user": {"uid": plan.user.uid, "name": plan.user.name},
            "sound_server": server.get("api", "not seen"),
            "microphone_opened_t": min(opened) if opened else None,
            "isolated": plan.isolated,
            "netns": self.facts["netns"],
            "uplink": self.facts.get("uplink"),
            "capture": {
                "tool": plan.capture_tool,
                "interface": self.facts.get("capture_interface"),
            },
            "client": {
                "address": (self.facts.get("uplink") or {}).get("ns_addr", "").split("/")[0]
            },
            "tracer": {"roots": self.roots, "skip": list(plan.skip)},
            "cleanup": dict(cleanup),
        }


def hand_over(folder: Path, user: DesktopUser) -> None:
    """The evidence belongs to the person who ran the audit, not to root."""
    for path in [folder, *folder.iterdir()]:
        with contextlib.suppress(OSError):
            os.chown(path, user.uid, user.gid)
            path.chmod(0o755 if path.is_dir() else 0o644)


def _read_part(path: Path) -> list[dict[str, Any]]:
    """A part's rows; a last line cut by a killed writer is dropped."""
    rows = []
    with contextlib.suppress(OSError), path.open() as fh:
        for line in fh:
            with contextlib.suppress(json.JSONDecodeError):
                rows.append(json.loads(line))
    return rows


def _comm(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return "?"


def _count_lines(path: Path) -> int:
    with contextlib.suppress(OSError), path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 16), b""))
    return 0


def _last_line(path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, json.JSONDecodeError), path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - 8192))
        lines = fh.read().splitlines()
        for line in reversed(lines[1:] if len(lines) > 1 else lines):
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(line)
    return None


class _Interrupted(Exception):
    pass


def run_audit(plan: AuditPlan, timeline: Timeline) -> dict[str, Any]:
    """Record one audit into ``plan.out``; return its manifest (``status`` says if it failed).

    Whatever ends it, the parts recorded so far are published and everything the audit made
    is removed; ``ended_by`` says what ended it.
    """
    plan.out.mkdir(parents=True, exist_ok=True)
    recorder = AuditRecorder(plan)
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    def _interrupt(signum: int, _frame: object) -> None:
        raise _Interrupted(signal.Signals(signum).name)

    for sig in previous:
        signal.signal(sig, _interrupt)
    failure: str | None = None
    started = False
    try:
        recorder.preflight()
        if plan.isolated:
            recorder.start_network()
        recorder.start_capture()
        started = True
        recorder.start_app()
        recorder.start_witnesses()
        recorder.status("recording")
        recorder.event("timeline_start", how=timeline.how)
        recorder.ended_by = timeline.run(recorder)
    except _Interrupted as exc:
        recorder.ended_by = f"interrupted ({exc}) at step {recorder.step}"
    except Exception as exc:
        gone = recorder.app_gone()
        if gone:  # our part failed because the app had gone (e.g. before it could be traced)
            recorder.ended_by = f"{gone}, at step {recorder.step} ({exc})"
        else:
            failure = f"{type(exc).__name__}: {exc} (at step {recorder.step})"
            recorder.ended_by = "failure"
            log.error("audit failed: %s", failure)
    finally:
        for sig in previous:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        try:
            if started:
                with contextlib.suppress(Exception):
                    recorder.stop()
            cleanup = recorder.clean_up()
            if started:
                try:
                    more = timeline.events_made_elsewhere(recorder.epoch0)
                except (OSError, ValueError) as exc:
                    more, failure = [], failure or f"events file: {exc}"
                if more:
                    write_lines(recorder.parts / "events.file.jsonl", more)
                manifest = recorder.publish(cleanup, failure)
            else:
                manifest = {"status": "failed", "failure": failure, "cleanup": cleanup}
                write_json(plan.out / "manifest.failed.json", manifest)
        finally:
            shutil.rmtree(recorder.stage, ignore_errors=True)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return manifest
