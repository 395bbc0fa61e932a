"""Sessions on a Windows or macOS host: the native drivers' runner (``source`` = ``native``).

The Linux testbed (:mod:`reallymuted.testbed.namespace`) isolates a client in a network
namespace and feeds it a PulseAudio pipe microphone; a vendor's desktop app on Windows or macOS
has neither, so this runner records what such a host allows, into the same evidence files:

* ``traffic.pcapng``: dumpcap on the host interface named by the option ``interface``, with the
  option ``capture_filter`` (BPF). Not isolated: everything else the host sends on that
  interface is in it too, so the host should run nothing else (the manifest says so);
* ``mic_trace.jsonl``: the app-level witness only — Frida attached to every process whose name
  the registry lists for the app, with ``agents/native_core.js`` plus the platform agent
  (``wasapi.js``: ``wasapi:GetBuffer`` reads with decoded buffer flags, ``silent``, peak/RMS of
  the buffer when it holds data, and ``wasapi:Start``/``Stop``/``Initialize``/``ReleaseBuffer``
  calls; ``coreaudio.js``: ``coreaudio:IOProc``/``AudioUnitRender`` reads, ``AudioDeviceStart``/
  ``Stop`` calls). Each line has ``kind`` = ``read`` or ``call``; only ``read`` lines are
  microphone reads. There is no OS-level witness on these hosts;
* ``events.jsonl``: the schedule as it happened (``join`` waits until the app opens the
  microphone — a capture call or read in the trace — and fails the session if it never does),
  the tracer's coverage events, the stimulus player;
* ``client.log``: the commands the driver ran, the tracer's log, the player's output;
* ``manifest.json``: ``source: native`` and the same keys as a testbed manifest (``netns`` and
  the OS-witness microphone are null). A failed session leaves only ``manifest.failed.json``.

The stimulus is played in a loop on the host's default output (``afplay`` on macOS, .NET's
SoundPlayer on Windows): route it to the app's microphone with a loopback device (BlackHole,
VB-CABLE) chosen as the app's microphone, or play it over the air.

The agent's clock (QueryPerformanceCounter, mach_absolute_time) is mapped onto the session clock
(``time.monotonic``) by reading both around an rpc call, at attach and at detach; the manifest
records the offsets and round-trip times.

On a host where the driver cannot run (any Linux machine, a Mac for the Windows driver, a host
without dumpcap or without the options it needs) the session fails at once, at step
``preflight``, with a manifest saying why. Nothing of this runner has been run on a real
Windows or macOS host yet.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reallymuted.io import write_json
from reallymuted.paths import EVIDENCE, FAILED, MANIFEST, STAGE
from reallymuted.testbed import capture
from reallymuted.testbed.contract import SessionFailure, manifest_core
from reallymuted.testbed.drivers import Driver
from reallymuted.testbed.host_tracer import HostTracer, agent_source
from reallymuted.testbed.netns import ProcessSet
from reallymuted.testbed.runner import Runner
from reallymuted.testbed.spec import SessionSpec

log = logging.getLogger("reallymuted.testbed.host")

SOURCE = "native"


def redacted_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options as the manifest may show them (no meeting password)."""
    return {k: ("<redacted>" if k == "password" and v else v) for k, v in options.items()}


# --- the stimulus player ------------------------------------------------------------------


def player_command(wav: str, host: str, seconds: float) -> list[str]:
    """A command that plays ``wav`` in a loop on the default output for ``seconds``."""
    if host == "macos":
        return ["/bin/sh", "-c", 'while :; do afplay "$0" || exit 1; done', wav]
    if host == "windows":
        path = wav.replace("'", "''")
        return [
            "powershell",
            "-NoProfile",
            "-Command",
            f"$p = New-Object System.Media.SoundPlayer '{path}'; $p.PlayLooping(); "
            f"Start-Sleep -Seconds {int(seconds) + 1}",
        ]
    raise ValueError(f"no stimulus player for host {host!r}")


def _popen_group() -> dict[str, Any]:
    """Popen arguments giving the child its own process group (to stop it and only it)."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
    return {"start_new_session": True}


def _interrupt(proc: subprocess.Popen[Any]) -> None:
    """Ask a capture/player to stop the way it finishes its files (SIGINT / CTRL_BREAK)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, OSError):
        if sys.platform == "win32":
            proc.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
        else:
            os.killpg(proc.pid, signal.SIGINT)


def _kill(proc: subprocess.Popen[Any], timeout: float) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, OSError):
            if sys.platform == "win32":
                proc.kill()
            else:
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        return proc.poll()


# --- the runner ------------------------------------------------------------------------------


class HostRunner(Runner):
    """One native session, in this process (see the module docstring)."""

    clock_name = "time.monotonic"

    def __init__(self, spec: SessionSpec, stage: Path) -> None:
        super().__init__(spec, stage)
        self.procs: dict[str, subprocess.Popen[Any]] = {}
        self.tracer: HostTracer | None = None
        # the testbed's limit, plus the time the app may take to join
        join_s = float(spec.options.get("join_timeout_s", 60))
        self.deadline = (
            self.t0 + spec.lead_s + spec.schedule_s + spec.tail_s + spec.timeout_margin_s + join_s
        )

    def fail(self, component: str, error: str) -> SessionFailure:
        return SessionFailure(self.step, component, error)

    def check(self, grace_s: float = 0.0) -> None:
        """A helper of ours that died, or the session's time limit (the app is not ours)."""
        for role, proc in self.procs.items():
            if proc.poll() is not None:
                raise self.fail(role, f"{role} (pid {proc.pid}) exited with status {proc.poll()}")
        if time.monotonic() > self.deadline:
            raise self.fail("timeout", "session exceeded its time limit")

    def start(self, role: str, argv: list[str]) -> subprocess.Popen[Any]:
        out = (self.logs / f"{role}.log").open("ab")
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, **_popen_group()
        )
        out.close()
        self.procs[role] = proc
        return proc

    def run(self) -> None:
        spec = self.spec
        host = platform.system().lower()
        self.start_clock()
        driver = self.make_driver(
            workdir=self.stage / "client", procs=ProcessSet(), env=dict(os.environ)
        )

        self.enter("capture")
        interface = str(spec.options["interface"])
        capture_filter = driver.capture_filter()
        pcap = self.parts / "traffic.pcapng"
        with self.blame("capture"):
            proc = self.start(
                "capture",
                capture.capture_command(
                    "dumpcap", pcap, interface=interface, capture_filter=capture_filter
                ),
            )
            capture.wait_capture_ready(pcap, lambda: proc.poll() is None)
        self.result["capture"] = {"interface": interface, "filter": capture_filter}
        self.events("capture_start", pid=proc.pid, tool="dumpcap", interface=interface)

        self.enter("stimulus")
        planned = self.deadline - time.monotonic() + 5  # outlives the session: never ends it
        with self.blame("player"):
            player = self.start(
                "player",
                player_command(spec.stimulus_path, "macos" if host == "darwin" else host, planned),
            )
        self.events(
            "stimulus_start",
            pid=player.pid,
            name=spec.stimulus,
            loop=True,
            output="host default output device",
        )

        self.enter("client")
        with self.blame("client"):
            driver.start()
        self.enter("tracer")
        with self.blame("tracer"):
            self.tracer = HostTracer(
                driver.process_names(),  # type: ignore[attr-defined]
                agent_source(driver.agent),  # type: ignore[attr-defined]
                self.t0,
                self.events,
                probe=bool(spec.options.get("probe", True)),
            )
            self.tracer.start()
        if not self.tracer.sessions:
            raise self.fail("tracer", "no process of the app could be attached")
        self.events("client_start", pids=sorted(self.tracer.sessions))
        self.enter("prepare")
        with self.blame("client"):
            driver.prepare()
        self.events("client_ready")
        self.play_schedule(driver)
        self.stop()

    def joined(self, issued_t: float) -> dict[str, Any]:
        """The app has joined with audio once it opens the microphone."""
        timeout = float(self.spec.options.get("join_timeout_s", 60))
        assert self.tracer is not None
        while (first := self.tracer.activity_since(issued_t)) is None:
            if self.now() - issued_t > timeout:
                raise self.fail(
                    "client",
                    f"the app did not open the microphone within {timeout:.0f} s of the join "
                    "URL (not admitted to the meeting, or joined without computer audio?)",
                )
            self.wait_until(self.now() + 0.2)
        return {"audio_started_t": first["t"], "audio_started_api": first["api"]}

    def schedule_origin(self, join_t: float) -> float:
        """The phases count from when the app's audio started, not from the join request."""
        return self.now()

    def stop(self) -> None:
        self.enter("stop")
        if self.tracer is not None:
            self.result["tracer"] = self.tracer.stop()
        if self.driver is not None:
            with self.blame("client"):
                self.driver.stop()
        self.events("client_stop")
        client_gone = time.monotonic()
        for role in ("player", "capture"):
            proc = self.procs.pop(role, None)
            if proc is not None:
                if role == "capture":  # as on Linux; not measured with npcap
                    capture.wait_last_block(client_gone)
                _interrupt(proc)
                _kill(proc, 5.0)
        self.events("capture_stop")
        self.result["end_t"] = self.events("session_end")

    def cleanup(self) -> None:
        """After a failure: stop what we started (never the app: it is not ours)."""
        if self.tracer is not None and not self.tracer.stopping.is_set():
            with contextlib.suppress(Exception):
                self.result["tracer"] = self.tracer.stop()
        for proc in self.procs.values():
            _interrupt(proc)
            _kill(proc, 3.0)
        self.procs.clear()
        with contextlib.suppress(Exception):
            self.events.close()

    def collect(self) -> None:
        """Write the four evidence files; fail if the trace shows nothing was hooked."""
        self.enter("collect")
        self.events.close()
        events = self.gather("events.runner.jsonl")
        assert self.tracer is not None
        rows = sorted(self.tracer.rows, key=lambda r: r["t"])
        if not any(self.tracer.platform_ok.values()):
            raise self.fail("tracer", "no traced process has the capture API: nothing hooked")
        sections = list(self.driver.logs if self.driver else [])
        sections += [(p.stem, p) for p in sorted(self.logs.glob("*.log"))]
        self.publish(events, rows, sections)
        self.result["counts"] = {
            "events": len(events),
            "mic_trace": dict(Counter(r["api"] for r in rows)),
            "reads": sum(1 for r in rows if r["kind"] == "read"),
            "traced_pids": sorted(self.tracer.sessions),
        }


def host_facts() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


def host_versions(spec: SessionSpec, driver: type[Driver]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    try:
        app = driver.version(spec.options)
    except Exception as exc:  # a broken driver must not hide the session's own failure
        app = f"unknown ({type(exc).__name__})"
    return {
        "app": app,
        "os": platform.platform(),
        "dumpcap": capture.tool_version("dumpcap") if shutil.which("dumpcap") else "not installed",
        "frida": pkg("frida"),
        "python": platform.python_version(),
        "reallymuted": pkg("reallymuted"),
    }


def host_manifest(
    spec: Any, result: Mapping[str, Any], failure: Mapping[str, Any] | None, versions: Mapping
) -> dict[str, Any]:
    """The manifest of a host session: the testbed's keys, ``source: native``."""
    capture_info = result.get("capture") or {
        "interface": spec.options.get("interface"),
        "filter": spec.options.get("capture_filter"),
    }
    return {
        **manifest_core(spec, result, failure, SOURCE, redacted_options(spec.options)),
        "microphone": {
            "source": "host",
            "note": "the app's own microphone device; the stimulus plays on the host's default "
            "output. No OS-level witness on this host.",
        },
        "capture": {
            "tool": "dumpcap",
            **capture_info,
            "isolated": False,
            "note": "host interface: holds every packet the host sent on it, not only the app's",
        },
        "clock": "t = seconds since start.monotonic (time.monotonic); agent times mapped by "
        "rpc clock calibration (tracer.calibration); pcapng time ts is at t = ts - start.epoch",
        "versions": dict(versions),
        "host": host_facts(),
        "netns": None,
        "endpoints": result.get("endpoints", {}),
        "client": {"ports": []},
        "tracer": result.get("tracer"),
        "counts": result.get("counts", {}),
    }


def run_host_session(spec: SessionSpec, outdir: str | Path, driver: type[Driver]) -> dict[str, Any]:
    """Run one native session; publish its evidence in ``outdir``; return the manifest.

    Same contract as :func:`reallymuted.testbed.supervisor.run_session`: on failure only
    ``manifest.failed.json`` is left in ``outdir``.
    """
    started = time.monotonic()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for name in (*EVIDENCE, MANIFEST, FAILED):
        (outdir / name).unlink(missing_ok=True)
    stage = outdir / STAGE
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    failure: dict[str, Any] | None = None
    result: dict[str, Any] = {}
    runner: HostRunner | None = None
    versions: dict[str, str] = {}
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):

            def _interrupted(signum: int, _frame: object) -> None:
                raise SessionFailure("interrupted", "supervisor", signal.Signals(signum).name)

            previous[sig] = signal.signal(sig, _interrupted)
    try:
        spec.validate()
        problem = driver.host_problem(spec.options)  # type: ignore[attr-defined]
        if problem:
            raise SessionFailure("preflight", "host", problem)
        if not Path(spec.stimulus_path).is_file():
            raise SessionFailure("preflight", "stimulus", f"{spec.stimulus_path} does not exist")
        versions = host_versions(spec, driver)
        runner = HostRunner(spec, stage)
        runner.run()
        runner.collect()
        result = runner.result
    except SessionFailure as exc:
        failure = exc.record()
    except Exception as exc:
        step = runner.step if runner is not None else "preflight"
        failure = {"step": step, "component": "runner", "error": f"{type(exc).__name__}: {exc}"}
        log.error("host session error:\n%s", traceback.format_exc())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if runner is not None:
            if failure is not None:
                runner.cleanup()
            result = runner.result
            if runner.driver is not None:
                with contextlib.suppress(Exception):
                    result["endpoints"] = runner.driver.endpoints()
    if not versions:
        versions = host_versions(spec, driver)
    manifest = host_manifest(spec, result, failure, versions)
    manifest["supervisor"] = {"wall_s": round(time.monotonic() - started, 3)}
    if failure is None:
        for name in EVIDENCE:
            (stage / "evidence" / name).replace(outdir / name)
            with contextlib.suppress(OSError):
                (outdir / name).chmod(0o644)  # dumpcap creates its file private
        manifest["witness_files"] = {n: (outdir / n).is_file() for n in EVIDENCE}
        write_json(outdir / MANIFEST, manifest)
    else:
        manifest["witness_files"] = {n: False for n in EVIDENCE}
        log.error("session FAILED: %s", json.dumps(manifest["failure"]))
        write_json(outdir / FAILED, manifest)
    shutil.rmtree(stage, ignore_errors=True)
    return manifest
