"""The namespace runner: one Linux testbed session, run inside its private network namespace.

Started by the supervisor (:mod:`reallymuted.testbed.supervisor`) as
``python -m reallymuted.testbed.namespace SPEC.json`` inside the namespace, it starts a private
PulseAudio whose microphone is a pipe fed in real time from the stimulus by a paced writer
(the OS witness), the capture, the client through its driver and the Frida tracer (the app
witness), plays the schedule, stops everything in an order that loses nothing, and merges what
each part recorded into the evidence files (docs/evidence.md). Exit status 0 only when the
evidence is complete; otherwise ``failure.json`` in the stage says which step and component
failed. The supervisor publishes the evidence and writes the manifest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

from reallymuted.guard import control
from reallymuted.io import atomic_path, read_jsonl, write_json
from reallymuted.paths import EVIDENCE
from reallymuted.testbed import audio, capture, netns
from reallymuted.testbed.contract import SessionFailure, describe_exit, read_json
from reallymuted.testbed.drivers import Driver
from reallymuted.testbed.runner import Runner
from reallymuted.testbed.spec import SessionSpec

log = logging.getLogger("reallymuted.testbed.namespace")


class NamespaceRunner(Runner):
    """Runs one session inside its network namespace; see the module docstring."""

    def __init__(self, spec: SessionSpec, stage: Path, scratch: Path) -> None:
        super().__init__(spec, stage)
        self.scratch = scratch
        # every process started is registered in pids.jsonl, which the supervisor reaps
        self.procs = netns.ProcessSet(stage / "pids.jsonl")
        self.cpu_at_join = 0.0

    def check(self, grace_s: float = 0.0) -> None:
        """Fail the session if any process it started has died unasked."""
        deadline = time.monotonic() + grace_s
        while True:
            for managed in self.procs.dead():
                raise SessionFailure(
                    self.step,
                    managed.role,
                    f"{managed.role} (pid {managed.pid}) {describe_exit(managed.returncode())}",
                )
            if time.monotonic() >= deadline:
                return
            time.sleep(0.02)

    # -- steps ------------------------------------------------------------------------------
    def start_pulse(self) -> audio.PulsePaths:
        self.enter("pulseaudio")
        spec = self.spec
        with self.blame("pulseaudio"):
            paths = audio.prepare_pulse(
                self.scratch / "pulse", spec.rate, spec.channels, spec.suspend_timeout_s
            )
            pulse = self.procs.start(
                "pulseaudio",
                audio.pulse_command(paths, self.logs / "pulseaudio.log"),
                env=audio.pulse_env(paths),
                output=self.logs / "pulseaudio.out",
            )
            audio.wait_pulse_ready(paths, lambda: pulse.returncode() is None)
        # PulseAudio makes its sink's I/O thread real-time but not the pipe source's: under
        # load, a late drain of the FIFO would read as a microphone nobody was reading.
        sched = {}
        if spec.realtime_priority > 0:
            drainer = audio.pipe_source_thread(pulse.pid)
            sched["pipe_source_sched"] = (
                audio.make_realtime(drainer, spec.realtime_priority) if drainer else "no thread"
            )
        self.events("pulse_ready", pid=pulse.pid, source="mic", server=paths.server, **sched)
        return paths

    def start_capture(self, capture_filter: str | None, interface: str = "lo") -> Path:
        self.enter("capture")
        out = self.parts / "traffic.pcapng"
        argv = capture.capture_command(
            self.spec.capture_tool, out, interface=interface, capture_filter=capture_filter
        )
        self.result["capture_interface"] = interface
        with self.blame("capture"):
            proc = self.procs.start(
                "capture",
                argv,
                output=self.logs / "capture.log",
                stop_signal=signal.SIGINT,
            )
            capture.wait_capture_ready(out, lambda: proc.returncode() is None)
        self.events(
            "capture_start",
            pid=proc.pid,
            tool=self.spec.capture_tool,
            interface=interface,
            filter=capture_filter,
        )
        return out

    def start_writer(self, paths: audio.PulsePaths) -> None:
        self.enter("writer")
        spec = self.spec
        pulse = self.procs.get("pulseaudio")
        out = self.parts / "mic_os.jsonl"
        argv = [
            sys.executable,
            "-m",
            "reallymuted.testbed.audio",
            "feed",
            "--fifo",
            str(paths.fifo),
        ]
        argv += ["--stimulus", spec.stimulus_path, "--out", str(out), "--t0", repr(self.t0)]
        argv += ["--rate", str(spec.rate), "--channels", str(spec.channels)]
        argv += ["--tick-ms", str(spec.tick_ms), "--pipe-bytes", str(spec.pipe_bytes)]
        argv += ["--reader-pid", str(pulse.pid if pulse else 0)]
        argv += ["--realtime-priority", str(spec.realtime_priority)]
        with self.blame("writer"):
            writer = self.procs.start("writer", argv, output=self.logs / "writer.log")
            deadline = time.monotonic() + 10
            while not (out.exists() and out.stat().st_size > 0):
                if writer.returncode() is not None:
                    raise RuntimeError(f"writer {describe_exit(writer.returncode())}")
                if time.monotonic() > deadline:
                    raise TimeoutError("the writer wrote no tick within 10 s")
                time.sleep(0.01)
            first = json.loads(out.read_text().splitlines()[0])
        self.events(
            "stimulus_start",
            t=first["t"],
            pid=writer.pid,
            name=spec.stimulus,
            path=spec.stimulus_path,
            loop=True,
            tick_ms=spec.tick_ms,
            **({"sched": first["sched"]} if "sched" in first else {}),
        )

    def start_guard(self, roots: list[int], env: dict[str, str]) -> None:
        """``reallymuted guard`` on the client's processes and the session's PulseAudio; the
        schedule's mutes go to it through its socket (:meth:`os_mute`)."""
        self.enter("guard")
        socket_path = self.scratch / "guard.sock"
        # A schedule that starts muted is a person who joins muted: the OS mutes each stream as
        # the client opens it, rather than at the first mute, after the client's first reads.
        start = "--muted" if self.spec.schedule[0]["state"] == "muted" else "--live"
        argv = [sys.executable, "-m", "reallymuted.guard.cli", "run", start]
        argv += [f"--pid={pid}" for pid in roots]
        argv += ["--app", self.spec.app, "--socket", str(socket_path)]
        argv += ["--status", str(self.parts / "guard.status.json")]
        argv += ["--events", str(self.parts / "events.guard.jsonl")]
        with self.blame("guard"):
            self.procs.start("guard", argv, env=env, output=self.logs / "guard.log")
            deadline = time.monotonic() + 10.0
            while not socket_path.exists():
                if time.monotonic() > deadline or self.procs.get("guard").returncode() is not None:
                    raise RuntimeError("the guard did not start (logs/guard.log)")
                time.sleep(0.02)
        self.guard_socket = str(socket_path)
        self.events("guard_start", pids=roots)

    def os_mute(self, muted: bool) -> dict[str, Any]:
        if not self.spec.guard:
            return {}
        with self.blame("guard"):
            reply = control.request("mute" if muted else "unmute", self.guard_socket)
        # applied_t: the guard has answered, so the client's streams are muted (or let through)
        applied = {
            "muted": reply["muted"],
            "streams": len(reply["streams"]),
            "applied_t": self.now(),
        }
        return {"guard": applied}

    def start_tracer(self, roots: list[int], skip: tuple[str, ...]) -> None:
        """Start the tracer on the client's tree; :meth:`tracer_ready` waits for it."""
        self.enter("tracer")
        argv = [sys.executable, "-m", "reallymuted.testbed.tracing", "--t0", repr(self.t0)]
        argv += ["--out", str(self.parts / "mic_app.jsonl")]
        argv += ["--events", str(self.parts / "events.tracer.jsonl")]
        argv += ["--status", str(self.parts / "tracer.status.json")]
        argv += ["--poll", str(self.spec.trace_poll_s)]
        for root in roots:
            argv += ["--root", str(root)]
        for pattern in skip:
            argv.append(f"--skip={pattern}")  # the pattern itself starts with "--"
        with self.blame("tracer"):
            # Frida unpacks its helper into TMPDIR and keeps an identity under HOME: both in
            # the session's scratch directory.
            tmp = self.scratch / "tmp"
            tmp.mkdir(exist_ok=True)
            self.procs.start(
                "tracer",
                argv,
                stdout=subprocess.PIPE,
                output=self.logs / "tracer.log",
                text=True,
                env={**os.environ, "TMPDIR": str(tmp), "HOME": str(tmp)},
            )
        self.result["tracer_roots"] = roots

    def tracer_ready(self) -> None:
        """Wait for the tracer's ready line: the client's root processes are attached."""
        self.enter("tracer")
        tracer = self.procs.get("tracer")
        with self.blame("tracer"):
            ready = _read_line(tracer.popen.stdout, timeout=30.0)
            if ready is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    tracer.popen.wait(2.0)
                raise RuntimeError(f"tracer not ready: it {describe_exit(tracer.returncode())}")
        self.result["tracer_ready"] = json.loads(ready).get("ready")

    def wait_traced(self, roots: list[int], timeout: float = 30.0) -> None:
        """Wait until every process now in the client's tree is attached (or gone)."""
        self.enter("tracer")
        status = self.parts / "tracer.status.json"
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            covered = set((read_json(status) or {}).get("covered", []))
            tree = netns.descendants(roots)
            if tree <= covered:
                return
            if time.monotonic() > deadline:
                raise SessionFailure(
                    "tracer", "tracer", f"processes {sorted(tree - covered)} not attached in time"
                )
            time.sleep(0.02)

    def join_at(self) -> float:
        """The microphone has been fed ``lead_s`` when the client joins."""
        return self.events_first("stimulus_start") + self.spec.lead_s

    def joined(self, issued_t: float) -> dict[str, Any]:
        self.cpu_at_join = netns.tree_cpu_s(self.result["client_roots"])
        return {}

    def left(self) -> None:
        # the client's CPU time between join and leave: what the tracer's cost is measured by
        self.result["client_cpu_s"] = round(
            netns.tree_cpu_s(self.result["client_roots"]) - self.cpu_at_join, 3
        )

    def events_first(self, name: str) -> float:
        self.events.fh.flush()
        for row in read_jsonl(self.parts / "events.runner.jsonl"):
            if row["event"] == name:
                return float(row["t"])
        raise SessionFailure(self.step, "runner", f"no {name} event")

    def stop(self) -> None:
        """Stop in an order that loses nothing: tracer (drains its agents), client, mic, and the
        capture once it holds the client's last packets."""
        self.enter("stop")
        self.check()
        guard = self.procs.get("guard")
        if guard is not None:  # before the client: it must not see its streams let through
            self.procs.stop(guard, timeout=5.0)
        tracer = self.procs.get("tracer")
        if tracer is not None:
            t = self.now()
            rc = self.procs.stop(tracer, timeout=10.0)
            if rc != 0:
                raise SessionFailure("stop", "tracer", f"tracer {describe_exit(rc)} on stop")
            self.events("tracer_stop", took_s=round(self.now() - t, 3))
        t = self.now()
        if self.driver is not None:
            with self.blame("client"):
                self.driver.stop()
        self.events("client_stop", took_s=round(self.now() - t, 3))
        client_gone = time.monotonic()  # it has sent its last packets (an RTCP BYE, a beacon)
        writer = self.procs.get("writer")
        if writer is not None:
            self.stop_or_fail(writer)
        pulse = self.procs.get("pulseaudio")
        if pulse is not None:
            self.procs.stop(pulse, timeout=3.0)
        capture_proc, waited = self.procs.get("capture"), 0.0
        if capture_proc is not None:
            waited = capture.wait_last_block(client_gone)
            self.stop_or_fail(capture_proc)
        self.events("capture_stop", waited_s=round(waited, 3))
        self.result["strays"] = self.stop_strays()
        self.result["end_t"] = self.events("session_end")

    def stop_or_fail(self, managed: netns.Managed) -> None:
        rc, role = self.procs.stop(managed, timeout=5.0), managed.role
        if rc != 0:
            raise SessionFailure("stop", role, f"{role} {describe_exit(rc)} on stop")

    def stop_strays(self) -> list[dict[str, Any]]:
        """Stop helpers our tools left behind in the namespace (e.g. Frida's injector)."""
        known = [m.pid for m in self.procs.procs]
        strays = netns.same_namespace_strays(known)
        for stray in strays:
            log.info("stopped stray process %d (%s)", stray["pid"], stray["comm"])
        return strays

    def collect(self, driver: Driver) -> None:
        """Merge the parts into the four evidence files (the supervisor adds the manifest)."""
        self.enter("collect")
        self.events.close()
        events = self.gather("events.runner.jsonl", "events.tracer.jsonl")
        reads = self.gather("mic_os.jsonl", "mic_app.jsonl")
        names = {e["event"] for e in events}
        for needed in ("join", "leave", "stimulus_start"):
            if needed not in names:
                raise SessionFailure("collect", "runner", f"events.jsonl lacks {needed!r}")
        attached = {e["pid"] for e in events if e["event"] == "trace_attach"}
        missing = [r for r in self.result.get("tracer_roots", []) if r not in attached]
        if missing:
            raise SessionFailure("collect", "tracer", f"root process(es) {missing} never traced")
        if not any(r["api"] == audio.OS_API for r in reads):
            raise SessionFailure("collect", "writer", "no os:pipe-source tick recorded")
        guard = [
            ("guard", self.logs / "guard.log"),
            ("guard events", self.parts / "events.guard.jsonl"),
        ]
        self.publish(events, reads, [*driver.logs, *(guard if self.spec.guard else [])])
        self.collect_extra(driver)
        self.result["counts"] = {
            "events": len(events),
            "mic_trace": dict(Counter(r["api"] for r in reads)),
            "traced_pids": sorted(attached),
        }

    def collect_extra(self, driver: Driver) -> None:
        """Copy the evidence the driver adds to the contract (exactly what it declares)."""
        produced = driver.evidence()
        declared = set(driver.extra_evidence)
        if set(produced) != declared or declared & set(EVIDENCE):
            raise SessionFailure(
                "collect",
                "client",
                f"driver produced evidence {sorted(produced)}, declared {sorted(declared)}",
            )
        for name, path in sorted(produced.items()):
            if not path.is_file():
                raise SessionFailure("collect", "client", f"{name}: {path} was not written")
            with atomic_path(self.evidence / name) as tmp:
                shutil.copyfile(path, tmp)
        self.result["extra_evidence"] = sorted(produced)

    def run(self) -> None:
        spec = self.spec
        self.start_clock()
        paths = self.start_pulse()
        # Clients get the private daemon and a private HOME (no user config in, no files out).
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        env.update(PULSE_SERVER=paths.server, HOME=str(self.scratch / "client"))
        driver = self.make_driver(workdir=self.scratch / "client", procs=self.procs, env=env)
        capture_filter = harness_filter(driver.capture_filter())
        # a driver with an uplink (web apps) is captured there: loopback is only the harness
        self.start_capture(capture_filter, getattr(driver, "capture_interface", "lo"))
        self.start_writer(paths)
        self.enter("client")
        with self.blame("client"):
            driver.start()
            roots = driver.trace_roots()
        self.events("client_start", pids=roots)
        self.result["client_roots"] = roots
        if spec.guard:
            self.start_guard(roots, env)
        # The tracer attaches while the client gets ready (page load, registration...): the
        # two take seconds each, side by side rather than one after the other. The client's
        # tree is fully traced before it joins; a client that may read the microphone while
        # it prepares (a pre-join preview) has its roots attached first.
        if spec.trace_app:
            self.start_tracer(roots, driver.trace_skip)
            if driver.reads_while_preparing:
                self.tracer_ready()
        else:
            self.events("tracer_disabled")
        self.enter("prepare")
        with self.blame("client"):
            driver.prepare()
        self.events("client_ready")
        if spec.trace_app:
            if not driver.reads_while_preparing:
                self.tracer_ready()
            self.wait_traced(roots)
        self.play_schedule(driver)
        self.stop()
        self.collect(driver)
        self.result.update(
            capture_filter=capture_filter,
            endpoints=driver.endpoints(),
            client=driver.client_traffic(),
        )


# Frida's device manager probes for an adb server (tcp/5037) when the tracer starts: harness
# traffic, like the drivers' control channels, and kept out of the capture with them.
TRACER_FILTER = "not (tcp port 5037)"


def harness_filter(driver_filter: str | None) -> str:
    """The capture filter: everything except the harness's own channels."""
    return TRACER_FILTER if not driver_filter else f"{TRACER_FILTER} and {driver_filter}"


def _read_line(stream: Any, timeout: float) -> str | None:
    """One line from a pipe, or None after ``timeout`` (or at end of file)."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box and box[0] else None


def run_inner(spec_path: Path) -> int:
    """Entry point inside the namespace; exit status 0 only if the evidence is complete."""
    stage = spec_path.parent
    spec_data = json.loads(spec_path.read_text())
    scratch = Path(spec_data.pop("scratch"))
    spec = SessionSpec(**spec_data)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s inner: %(message)s", force=True
    )
    runner = NamespaceRunner(spec, stage, scratch)

    def _terminate(signum: int, _frame: object) -> None:
        raise SessionFailure(runner.step, "supervisor", f"{signal.Signals(signum).name} received")

    signal.signal(signal.SIGTERM, _terminate)
    status = 0
    try:
        runner.run()
    except BaseException as exc:
        failure = (
            exc.record()
            if isinstance(exc, SessionFailure)
            else {
                "step": runner.step,
                "component": "runner",
                "error": f"{type(exc).__name__}: {exc}",
            }
        )
        failure["traceback"] = traceback.format_exc()
        log.error("session failed at %s: %s", failure["step"], failure["error"])
        write_json(stage / "failure.json", failure)
        status = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if status:
            with contextlib.suppress(Exception):
                if runner.driver is not None:
                    runner.driver.stop()
        runner.procs.stop_all(timeout=2.0)
        with contextlib.suppress(Exception):
            runner.stop_strays()
        with contextlib.suppress(Exception):
            runner.events.close()
    write_json(stage / "inner.json", runner.result)
    return status


if __name__ == "__main__":
    sys.exit(run_inner(Path(sys.argv[1])))
