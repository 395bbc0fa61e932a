"""The supervisor: one testbed session from start to published evidence, whatever happens.

For one (app, mute mode, stimulus, repetition) a session records, independently, (a) every
packet the client sends, (b) every read of the microphone at the OS audio layer and (c) every
read at the app's own audio API, next to the ground-truth timeline (docs/evidence.md).

The supervisor (:func:`run_session`, in the host's namespace) creates a private network
namespace with only loopback, runs the namespace runner in it
(:mod:`reallymuted.testbed.namespace`), enforces a time limit, and whatever happens stops every
process the session started (by PID, from the registry), deletes the namespace, and publishes
either the complete evidence with ``manifest.json`` or, on failure, only
``manifest.failed.json``. A driver of a Windows or macOS app is run by the host runner
(:mod:`reallymuted.testbed.host`) instead, under the same contract.

By hand: ``python -m reallymuted.testbed.supervisor run --config config.yaml --app chromium
--mode soft --stimulus speech`` (root; ``--help``), and ``... summary DIR`` for a per-phase look.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reallymuted.io import write_json
from reallymuted.paths import (
    ATTEMPTS,
    CONFIG_SCHEMA,
    EVIDENCE,
    FAILED,
    MANIFEST,
    STAGE,
    session_dir,
    stimulus_wav,
)
from reallymuted.testbed import capture, host, netns, uplink
from reallymuted.testbed.contract import describe_exit, manifest_core, read_json, utc
from reallymuted.testbed.drivers import Driver, get_driver
from reallymuted.testbed.progress import progress_line
from reallymuted.testbed.spec import SessionSpec
from reallymuted.testbed.summary import summarise

log = logging.getLogger("reallymuted.testbed.supervisor")


def _versions(spec: SessionSpec, driver: type[Driver]) -> dict[str, str]:
    """Versions of everything that shaped the evidence."""
    from importlib.metadata import PackageNotFoundError, version

    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    def first_line(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        lines = (out.stdout or out.stderr).strip().splitlines()
        return lines[0] if lines else "unknown"

    os_release = {}
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            os_release[key] = value.strip('"')
    versions = {
        "app": driver.version(spec.options),
        "os": os_release.get("PRETTY_NAME", platform.platform()),
        "kernel": platform.release(),
        "tshark": capture.tool_version("tshark"),
        "frida": pkg("frida"),
        "python": platform.python_version(),
        "pulseaudio": first_line(["pulseaudio", "--version"]),
        "reallymuted": pkg("reallymuted"),
    }
    if spec.driver in ("chromium", "profile", "web"):
        versions["playwright"] = pkg("playwright")
    return versions


def _host() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "hostname": platform.node(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "cpu_model": cpu,
        "cpus": os.cpu_count(),
        "mem_total_kb": mem_kb,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


class _Interrupted(BaseException):
    """SIGTERM/SIGINT reached the supervisor (e.g. Snakemake cancelled the job)."""


def run_session(spec: SessionSpec, outdir: str | Path) -> dict[str, Any]:
    """Run one session; publish its evidence in ``outdir``; return the manifest.

    On failure the manifest (with ``status: failed``) is written as ``manifest.failed.json``
    and no evidence file is left in ``outdir``; the caller decides the exit status.
    """
    driver: type[Driver] | None = None
    with contextlib.suppress(ValueError):  # an unknown driver fails at preflight below
        driver = get_driver(spec.driver)
    if driver is not None and driver.runner == "host":  # Windows/macOS: no netns, no PulseAudio
        return host.run_host_session(spec, outdir, driver)
    started_mono, started_epoch = time.monotonic(), time.time()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    published = (*EVIDENCE, *(driver.extra_evidence if driver else ()))
    # A retry (the workflow reruns a failed session once) keeps the failed attempt's manifest
    # beside the new evidence, and the new manifest lists it: a retried session says so.
    failed_attempts = _keep_failed_attempt(outdir)
    for name in (*published, MANIFEST, FAILED):
        (outdir / name).unlink(missing_ok=True)
    stage = outdir / STAGE
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    scratch = Path(tempfile.mkdtemp(prefix="rm-session-"))
    name = f"{netns.PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
    failure: dict[str, Any] | None = None
    inner_rc: int | None = None
    cleanup: dict[str, Any] = {}
    versions: dict[str, str] = {}
    version_thread = threading.Thread(
        target=lambda: versions.update(_versions(spec, driver))  # type: ignore[arg-type]
    )
    inner_proc: subprocess.Popen[bytes] | None = None
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def _interrupt(signum: int, _frame: object) -> None:
        raise _Interrupted(signal.Signals(signum).name)

    for sig in previous:
        signal.signal(sig, _interrupt)
    step = "preflight"
    wants_uplink = False
    try:
        spec.validate()
        assert driver is not None  # validate() refused an unknown one
        wants_uplink = uplink.required(driver, spec.options)  # refuses without internet
        netns.preflight(["pulseaudio", "pactl", spec.capture_tool])
        driver.check_programs()
        if not Path(spec.stimulus_path).is_file():
            raise FileNotFoundError(f"stimulus {spec.stimulus_path} does not exist")
        version_thread.start()
        netns.remove_stale()
        step = "netns"
        netns.create(name)
        if wants_uplink:
            cleanup["uplink"] = uplink.attach(name, spec.options)
        spec_data = {**dataclasses.asdict(spec), "scratch": str(scratch)}
        write_json(stage / "spec.json", spec_data)
        step = "inner"
        timeout = spec.lead_s + spec.schedule_s + spec.tail_s + spec.timeout_margin_s
        argv = [*netns.exec_prefix(name), sys.executable, "-m", "reallymuted.testbed.namespace"]
        inner_proc = subprocess.Popen(
            [*argv, str(stage / "spec.json")],
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr,
            stderr=sys.stderr,
            start_new_session=True,
        )
        try:
            inner_rc = inner_proc.wait(timeout)
        except subprocess.TimeoutExpired:
            status = read_json(stage / "status.json") or {}
            failure = {
                "step": status.get("step", "start"),
                "component": "timeout",
                "error": f"session exceeded its time limit of {timeout:.0f} s",
            }
            inner_proc.send_signal(signal.SIGTERM)  # the runner stops its processes itself
            try:
                inner_rc = inner_proc.wait(15)
            except subprocess.TimeoutExpired:
                inner_proc.kill()
                inner_rc = inner_proc.wait()
        if failure is None and inner_rc != 0:
            failure = read_json(stage / "failure.json")
            if failure is None:
                status = read_json(stage / "status.json") or {}
                failure = {
                    "step": status.get("step", "start"),
                    "component": "runner",
                    "error": f"the inner runner {describe_exit(inner_rc)}",
                }
    except _Interrupted as exc:
        status = read_json(stage / "status.json") or {"step": step}
        failure = {"step": status["step"], "component": "supervisor", "error": f"{exc} received"}
    except Exception as exc:
        failure = {"step": step, "component": "supervisor", "error": f"{type(exc).__name__}: {exc}"}
        failure["traceback"] = traceback.format_exc()
    finally:
        for sig in previous:  # a second signal must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        if inner_proc is not None and inner_proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                inner_proc.kill()
            inner_proc.wait()
        cleanup["killed_from_registry"] = netns.reap_registry(stage / "pids.jsonl")
        if wants_uplink:
            cleanup["uplink_removed"] = uplink.detach(name, cleanup.get("uplink", {}))
        cleanup["killed_in_netns"] = netns.destroy(name)
        cleanup["netns_removed"] = name not in netns.names()
        shutil.rmtree(scratch, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if version_thread.ident is not None:
        version_thread.join(30)

    ended_mono, ended_epoch = time.monotonic(), time.time()
    inner = read_json(stage / "inner.json") or {}
    manifest = _manifest(spec, inner, versions, failure, cleanup, name, _source(driver))
    manifest["client_code"] = _client_code(driver, spec)
    t0_mono = inner.get("t0_monotonic", started_mono)
    manifest["supervisor"] = {
        "started_utc": utc(started_epoch),
        "ended_utc": utc(ended_epoch),
        "wall_s": round(ended_mono - started_mono, 3),
        "inner_exit_status": inner_rc,
    }
    if "join_t" in inner and "leave_t" in inner:
        join_abs = t0_mono + inner["join_t"]
        leave_abs = t0_mono + inner["leave_t"]
        manifest["supervisor"].update(
            setup_s=round(join_abs - started_mono, 3),
            schedule_s=round(inner["leave_t"] - inner["join_t"], 3),
            teardown_s=round(ended_mono - leave_abs, 3),
            overhead_s=round((ended_mono - started_mono) - (inner["leave_t"] - inner["join_t"]), 3),
        )
    manifest["failed_attempts"] = failed_attempts
    if failure is None:
        evidence = stage / "evidence"
        published = (*EVIDENCE, *inner.get("extra_evidence", []))
        for name_ in published:
            (evidence / name_).replace(outdir / name_)
            (outdir / name_).chmod(0o644)  # dumpcap creates its file private
        manifest["witness_files"] = {n: (outdir / n).is_file() for n in published}
        write_json(outdir / MANIFEST, manifest)  # last: its presence means "complete"
    else:
        manifest["witness_files"] = {n: False for n in published}
        # in the manifest too: a retry rewrites the rule's log, the failed attempt's file stays
        manifest["log_tails"] = _log_failure(stage, manifest)
        write_json(outdir / FAILED, manifest)
    shutil.rmtree(stage, ignore_errors=True)
    return manifest


def _keep_failed_attempt(outdir: Path) -> list[dict[str, Any]]:
    """If the session's last attempt failed (its failure manifest is still in ``outdir``: this
    run is a retry), move that manifest to ``failed-attempts/`` and return this run's failed
    attempts: those it listed, then itself (file, start time, failure). A run after a success
    is no retry: it returns none, and files of older runs' attempts stay where they are."""
    failed = outdir / FAILED
    if not failed.is_file():
        return []
    data = read_json(failed) or {}
    folder = outdir / ATTEMPTS
    folder.mkdir(exist_ok=True)
    number = len(list(folder.glob("attempt-*.json"))) + 1
    name = f"attempt-{number:03d}.json"  # zero-padded: sorts in order
    failed.replace(folder / name)
    this = {
        "file": f"{ATTEMPTS}/{name}",
        "start_utc": (data.get("start") or {}).get("utc"),
        "failure": data.get("failure"),
    }
    return [*(data.get("failed_attempts") or []), this]


def _manifest(
    spec: SessionSpec,
    inner: Mapping[str, Any],
    versions: Mapping[str, str],
    failure: Mapping[str, Any] | None,
    cleanup: Mapping[str, Any],
    netns_name: str,
    source: str,
) -> dict[str, Any]:
    shown = {k: v for k, v in failure.items() if k != "traceback"} if failure else None
    return {
        **manifest_core(spec, inner, shown, source, spec.options),
        "microphone": {
            "source": "module-pipe-source",
            "rate": spec.rate,
            "channels": spec.channels,
            "format": "s16le",
            "tick_ms": spec.tick_ms,
            "pipe_bytes": spec.pipe_bytes,
            "suspend_timeout_s": spec.suspend_timeout_s,
            "realtime_priority": spec.realtime_priority,
        },
        "capture": {
            "tool": spec.capture_tool,
            "interface": inner.get("capture_interface", "lo"),
            "filter": inner.get("capture_filter"),
        },
        "clock": "t = seconds since start.monotonic (CLOCK_MONOTONIC); pcapng time ts is at "
        "t = ts - start.epoch",
        "versions": dict(versions),
        "host": _host(),
        "netns": netns_name,
        "endpoints": inner.get("endpoints", {}),
        "client": inner.get("client", {}),
        "tracer": {
            "enabled": spec.trace_app,
            "roots": inner.get("tracer_roots"),
            "ready": inner.get("tracer_ready"),
        },
        "client_cpu_s": inner.get("client_cpu_s"),
        "counts": inner.get("counts", {}),
        "strays_stopped": inner.get("strays", []),
        "cleanup": dict(cleanup),
    }


def _client_code(driver: type[Driver] | None, spec: SessionSpec) -> dict[str, Any]:
    """The vendor code the client ran, as its driver records it (an error says why not)."""
    if driver is None:
        return {}
    try:
        return driver.client_code(spec.options)
    except Exception as exc:  # the session's own failure already says more
        return {"error": str(exc)}


def _source(driver: type[Driver] | None) -> str:
    """Where the evidence comes from, as the driver declares it (``unknown`` for no driver)."""
    return driver.source if driver is not None else "unknown"


def _log_failure(stage: Path, manifest: Mapping[str, Any]) -> dict[str, list[str]]:
    """Put the failure and the tails of the daemons' logs into the session log; return the
    tails (log name -> its last 40 lines, empty logs left out)."""
    log.error("session FAILED: %s", json.dumps(manifest["failure"]))
    failure = read_json(stage / "failure.json")
    if failure and failure.get("traceback"):
        log.error("inner runner traceback:\n%s", failure["traceback"])
    tails: dict[str, list[str]] = {}
    logs = stage / "logs"
    if logs.is_dir():
        for path in sorted(logs.iterdir()):
            lines = path.read_text(errors="replace").splitlines()[-40:]
            if lines:
                tails[path.name] = lines
                log.error("last lines of %s:\n  %s", path.name, "\n  ".join(lines))
    log.error("failure manifest:\n%s", json.dumps(manifest, indent=2, default=str))
    return tails


# --- command line ----------------------------------------------------------------------


def _parse_phase(text: str) -> dict[str, Any]:
    state, _, seconds = text.partition(":")
    return {"state": state, "seconds": float(seconds)}


def _parse_option(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reallymuted.testbed.supervisor",
        description="Run one testbed session (needs root). With --config, app/mode/stimulus "
        "name a session of the study; otherwise give --driver, --stimulus WAV and --phase.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one session and publish its raw evidence")
    run.add_argument(
        "--out",
        type=Path,
        help=f"output directory (default: {session_dir('APP', 'MODE', 'STIM', 'REP')})",
    )
    run.add_argument("--log", type=Path, help="session log file (default: stderr)")
    run.add_argument("--config", type=Path, help="study config (config.yaml)")
    run.add_argument("--app", required=True)
    run.add_argument("--mode", required=True)
    run.add_argument("--stimulus", required=True, help="stimulus name (with --config) or WAV")
    run.add_argument("--rep", type=int, default=1)
    run.add_argument("--driver", help="driver name (without --config)")
    run.add_argument("--phase", action="append", type=_parse_phase, help="state:seconds")
    run.add_argument("--option", action="append", type=_parse_option, default=[], help="k=v")
    run.add_argument("--capture-tool", choices=capture.TOOLS)
    run.add_argument("--lead", type=float)
    run.add_argument("--tail", type=float)
    summary = sub.add_parser("summary", help="per-phase witness and RTP summary of a session")
    summary.add_argument("dir", type=Path)
    summary.add_argument("--margin", type=float, default=0.5)
    args = parser.parse_args(argv)

    if args.command == "summary":
        print(json.dumps(summarise(args.dir, args.margin), indent=1))
        return 0

    from reallymuted.io import log_to_file

    log_to_file(args.log)
    spec = _spec_from_args(args)
    out = args.out or Path(session_dir(spec.app, spec.mode, spec.stimulus, spec.rep))
    manifest = run_session(spec, out)
    print(
        json.dumps({"status": manifest["status"], "out": str(out), "failure": manifest["failure"]})
    )
    return 0 if manifest["status"] == "ok" else 1


def _spec_from_args(args: argparse.Namespace) -> SessionSpec:
    overrides: dict[str, Any] = {}
    if args.capture_tool:
        overrides["capture_tool"] = args.capture_tool
    if args.lead is not None:
        overrides["lead_s"] = args.lead
    if args.tail is not None:
        overrides["tail_s"] = args.tail
    if args.config:
        from reallymuted.config import load_yaml, validate_config
        from reallymuted.testbed.stimuli import make_stimulus

        config = validate_config(load_yaml(args.config), CONFIG_SCHEMA)
        sessions = config["sessions"]
        wav = Path(stimulus_wav(args.stimulus))
        if not wav.exists():
            make_stimulus(sessions["stimuli"][args.stimulus], wav)
        spec = SessionSpec.from_config(sessions, args.app, args.mode, args.stimulus, args.rep, wav)
        if args.phase:
            spec.schedule = args.phase
        spec.options.update(dict(args.option))
        return dataclasses.replace(spec, **overrides)
    if not (args.driver and args.phase):
        raise SystemExit("without --config, give --driver and at least one --phase")
    wav = Path(args.stimulus)
    return SessionSpec(
        app=args.app,
        driver=args.driver,
        mode=args.mode,
        stimulus=wav.stem,
        stimulus_path=str(wav),
        rep=args.rep,
        schedule=args.phase,
        options=dict(args.option),
        **overrides,
    )


def run_for_rule(
    settings: Mapping[str, Any],
    app: str,
    mode: str,
    stimulus: str,
    rep: int,
    stimulus_wav: str | Path,
    out: Path,
) -> None:
    """Body of scripts/session_run.py (rule `session`): run the session, fail the job on
    failure. ``settings``: the app's part of the study's ``sessions`` config (rule_params)."""
    spec = SessionSpec.from_config(settings, app, mode, stimulus, rep, stimulus_wav)
    manifest = run_session(spec, out)
    line = progress_line()
    if line:  # in the job's log, and on the run's console (the stderr the job was given)
        log.info("%s", line)
        print(line, file=sys.__stderr__, flush=True)
    if manifest["status"] != "ok":
        failure = manifest["failure"]
        raise SystemExit(
            f"session failed at step {failure['step']} ({failure['component']}): "
            f"{failure['error']}; see manifest.failed.json"
        )


if __name__ == "__main__":
    sys.exit(_main())
