"""One testbed session: a real client through a scripted mute schedule, recorded three ways.

For one (app, mute mode, stimulus, repetition) the session records, independently,
(a) every packet the client sends, (b) every read of the microphone at the OS audio layer and
(c) every read at the app's own audio API, next to the ground-truth timeline.

Two processes share the work:

* the **supervisor** (:func:`run_session`, host namespace) creates a private network namespace
  with only loopback, runs the inner runner in it, enforces a time limit, and whatever happens
  stops every process the session started (by PID, from the registry), deletes the namespace,
  and publishes either the complete evidence or, on failure, only ``manifest.failed.json``;
* the **inner runner** (:func:`run_inner`, inside the namespace) starts a private PulseAudio, the
  capture, the paced microphone writer, the client (through its driver) and the Frida tracer,
  then plays the schedule: join, mute/unmute at the phase boundaries, leave.

Raw evidence: ``results/raw/{app}/{mode}-{stimulus}/rep{rep}/`` holds exactly the five files
below, plus the extra evidence its driver declares (``Driver.extra_evidence``: today only the
testbed profiles' ``collector.jsonl``, described last)

``manifest.json``
    written last (its presence means the other files are complete). ``status``/``exit_status``,
    ``source`` (the driver's: ``testbed``, or ``testbed-profile`` for the profiles), ``app``,
    ``driver``, ``mode``, ``condition``, ``rep``, ``options``, ``schedule`` (phases, lead_s,
    tail_s), ``stimulus`` (name, path, sha256), ``microphone``,
    ``capture`` (tool, interface, BPF filter), ``start``/``end`` (utc, epoch, monotonic),
    ``start_epoch``, ``versions`` (app, os, kernel, tshark, frida, python, pulseaudio, …),
    ``host``, ``netns``, ``client`` (``ports`` the client sends from, ``audio_level_ext_id``,
    ``decode_as``), ``endpoints`` (the profiles add ``collector``), ``tracer`` (roots, PIDs
    attached before join), ``counts``, ``witness_files`` (every evidence file, extra ones
    included), ``cleanup``, ``supervisor`` (wall, setup, schedule, teardown seconds).
    A failed session has no evidence files, only ``manifest.failed.json`` with the same keys and
    ``failure`` = {``step``, ``component``, ``error``} (Snakemake deletes a failed job's declared
    outputs, so the failure record lives under an undeclared name; the job exits non-zero).
``events.jsonl``
    ``{"t", "event", ...}`` sorted by ``t``: ``session_start`` (with ``epoch``, ``monotonic``,
    ``utc``), ``pulse_ready``, ``capture_start``, ``stimulus_start`` (the writer's first tick;
    the stimulus loops from there), ``client_start``, ``client_ready``, ``join``, ``mute``,
    ``unmute``, ``leave`` (``t`` = when the action was issued, ``took_s`` = until the client
    confirmed it, plus driver fields such as Chromium's selected candidate pair or baresip's
    reply text), ``client_stop``, ``capture_stop``, ``session_end``; the tracer's
    ``trace_attach``/``trace_skip``/``trace_hook``/``trace_detach``/``trace_error`` (coverage:
    which process was traced from when; ``trace_attach``'s ``main_asleep`` is false when the
    process was attached though its main thread never settled, see reallymuted.tracing) and
    ``trace_close_timeout`` (Frida's device manager hung at stop, after every read was
    drained); Chromium's page events ``page_*`` (e.g. ``page_detector_speech``: the "you are
    muted" detector heard speech).
``traffic.pcapng``
    everything on the namespace's loopback except the harness's own channels (the drivers'
    CDP or ctrl_tcp, Frida's adb probe: see ``capture.filter``). Timestamps are epoch:
    ``t = ts - start_epoch``.
``mic_trace.jsonl``
    both witnesses, sorted by ``t``, one line per read: ``{"t", "api", "pid", "tid", "frames",
    "bytes", "peak", "rms"}``; ``peak``/``rms`` are fractions of full scale of the samples the
    reader actually got (null when unknown or none). ``api``:

    * ``os:pipe-source`` — one line per 20 ms writer tick, ``pid`` = the PulseAudio daemon,
      ``tid`` null: ``bytes`` accepted by the FIFO (= read by PulseAudio: some client stream
      is running), ``dropped`` refused with EAGAIN (nobody reading), ``tick``, ``late_ms``;
      ``frames`` at the microphone's 48 kHz.
    * app level, at the API the app itself called (a read nested inside another hooked read is
      not repeated): ``pulse:pa_stream_peek``, ``pulse:pa_simple_read``, ``alsa:snd_pcm_readi``,
      ``alsa:snd_pcm_readn``, ``alsa:snd_pcm_mmap_commit``; ``frames`` at the app's own stream
      rate (Chromium records at 44.1 kHz float), ``tid`` the reading thread.
``client.log``
    the client's own output, one ``==> label <==`` section per process or channel (e.g.
    ``chromium``, ``page-console``, ``meeting-server``; baresip ``baresip`` and ``peer``).
``collector.jsonl`` (testbed profiles only: driver ``profile``)
    the telemetry collector's own log (:mod:`reallymuted.collector`), a witness of what the
    client posted that is independent of the capture: ``{"t", "event": "listening"}`` when it
    accepts connections, one ``{"t", "event": "request", "epoch", "client" ("ip:port"),
    "method", "path", "version", "headers" ([name, value] pairs in order), "bytes", "body"
    (text) or "body_b64", "status"}`` per request, ``{"t", "event": "stopped"}`` at the end.
    ``t`` is on the session clock.

The clock: ``t`` everywhere is seconds since ``start.monotonic`` on CLOCK_MONOTONIC (the Frida
agents call clock_gettime in the client, the writer and the runner use time.monotonic).

App ids and conditions: ``chromium`` (modes ``soft``, ``replace``, ``stop``, each optionally
``-detector``), ``baresip-opus``/``baresip-pcmu`` (the codec is part of the app; mode
``ctrl``), ``linphone`` (mode ``ctrl``: its stdin ``mute``),
``control-continuous``/``control-stops``/``control-periodic`` (the project's own
reader; the policy is part of the app; mode ``ctrl``), and the testbed profiles ``webex-2021``,
``zoom-native``, ``webrtc-soft-mute``, ``native-flags-only`` (an app's published mute behaviour
on the meeting page, :mod:`reallymuted.drivers.profile`; mode ``app``). ``{condition}`` =
``{mode}-{stimulus}``; stimulus names have no ``-``, so the split is unambiguous. A stimulus
may name the ``apps`` that play it (default: every app); an app may have its own ``schedule``
and ``repetitions`` (default: the sessions') and play only some ``stimulus_kinds`` (the
attack's apps: muted from join to leave, activity stimuli only; :mod:`reallymuted.attack`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import logging
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from reallymuted import audio, capture, netns, uplink
from reallymuted.drivers import Driver, SessionContext, get_driver
from reallymuted.io import atomic_path, read_jsonl, sha256_file, write_json

log = logging.getLogger("reallymuted.session")

EVIDENCE = ("events.jsonl", "mic_trace.jsonl", "traffic.pcapng", "client.log")
MANIFEST = "manifest.json"
FAILED = "manifest.failed.json"
STAGE = ".session"  # working directory of a running session, inside the output directory
STATES = ("unmuted", "muted")
SCHEMA = "reallymuted.session/1"
# Keys of a `sessions.apps` entry that shape the study matrix, not the driver: they are never
# passed to the driver as options. `schedule` and `repetitions` replace the sessions' own for
# that app (the attack's apps are muted throughout); `stimulus_kinds` limits what it plays.
APP_KEYS = ("driver", "modes", "schedule", "stimulus_kinds", "repetitions")


# --- the specification of one session ---------------------------------------------------


@dataclasses.dataclass
class SessionSpec:
    """Everything that determines one session (and nothing that varies run to run)."""

    app: str
    driver: str
    mode: str
    stimulus: str
    stimulus_path: str
    rep: int
    schedule: list[dict[str, Any]]  # [{"state": "unmuted"|"muted", "seconds": s}, ...]
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    capture_tool: str = "dumpcap"
    lead_s: float = 1.0  # microphone fed (and traced) at least this long before join
    tail_s: float = 0.5  # capture and tracing continue this long after leave
    timeout_margin_s: float = 60.0  # time allowed beyond lead + schedule + tail
    rate: int = 48000
    channels: int = 1
    tick_ms: int = 20
    pipe_bytes: int = 4096
    suspend_timeout_s: int = 1
    trace_poll_s: float = 0.05
    # Only for measuring the tracer's own cost (make bench): without it the session has no
    # app-level witness, and mic_trace.jsonl holds the OS witness alone.
    trace_app: bool = True

    @property
    def condition(self) -> str:
        return f"{self.mode}-{self.stimulus}"

    @property
    def schedule_s(self) -> float:
        return float(sum(p["seconds"] for p in self.schedule))

    def validate(self) -> None:
        if not self.schedule:
            raise ValueError("the schedule has no phases")
        for phase in self.schedule:
            if phase.get("state") not in STATES or float(phase.get("seconds", 0)) <= 0:
                raise ValueError(f"bad schedule phase {phase!r}: need state in {STATES}, seconds>0")
        get_driver(self.driver).check(self.mode, self.options)

    @classmethod
    def from_config(
        cls,
        sessions: Mapping[str, Any],
        app: str,
        mode: str,
        stimulus: str,
        rep: int,
        stimulus_path: str | Path,
    ) -> SessionSpec:
        """The spec of one session of the study matrix in ``config['sessions']``."""
        if app not in sessions["apps"]:
            raise ValueError(f"app {app!r} is not in sessions.apps")
        entry = dict(sessions["apps"][app])
        if mode not in entry["modes"]:
            raise ValueError(f"mode {mode!r} is not configured for app {app!r}")
        audio_cfg = sessions.get("audio", {})
        return cls(
            app=app,
            driver=entry["driver"],
            mode=mode,
            stimulus=stimulus,
            stimulus_path=str(stimulus_path),
            rep=int(rep),
            schedule=[dict(p) for p in entry.get("schedule") or sessions["schedule"]],
            options={k: v for k, v in entry.items() if k not in APP_KEYS},
            capture_tool=sessions.get("capture_tool", "dumpcap"),
            lead_s=float(sessions.get("lead_s", 1.0)),
            tail_s=float(sessions.get("tail_s", 0.5)),
            timeout_margin_s=float(sessions.get("timeout_margin_s", 60)),
            rate=int(audio_cfg.get("rate", 48000)),
            tick_ms=int(audio_cfg.get("tick_ms", 20)),
            pipe_bytes=int(audio_cfg.get("pipe_bytes", 4096)),
            suspend_timeout_s=int(audio_cfg.get("suspend_timeout_s", 1)),
        )


def matrix(sessions: Mapping[str, Any]) -> list[tuple[str, str, str, int]]:
    """(app, mode, stimulus, rep) of every session the config asks for.

    Each app's modes and options are checked against its driver, so a mode the driver does
    not know stops the workflow before any job runs. A stimulus that names ``apps`` is played
    by those apps only (e.g. a level staircase for the telemetry profile). ``select``, when
    given, keeps only those apps (an overlay cannot remove the apps config.yaml defines, since
    Snakemake merges mappings; config/native-*.yaml and config/web.yaml select theirs). An app
    that names ``stimulus_kinds`` plays only stimuli of those kinds (the attack's apps play
    only the ``activity`` stimuli that name them, never the study's speech).
    """
    selected = list(sessions.get("select") or sessions["apps"])
    missing = sorted(set(selected) - set(sessions["apps"]))
    if missing:
        raise ValueError(f"sessions.select: {missing} not in sessions.apps")
    for app, entry in sessions["apps"].items():
        options = {k: v for k, v in entry.items() if k not in APP_KEYS}
        for mode in entry["modes"]:
            try:
                get_driver(entry["driver"]).check(mode, options)
            except ValueError as exc:
                raise ValueError(f"sessions.apps.{app}: {exc}") from None
    for name, spec in sessions["stimuli"].items():
        unknown = sorted(set((spec or {}).get("apps", [])) - set(sessions["apps"]))
        if unknown:
            raise ValueError(f"sessions.stimuli.{name}.apps: {unknown} not in sessions.apps")
    return [
        (app, mode, stimulus, rep)
        for app, entry in sessions["apps"].items()
        if app in selected
        for mode in entry["modes"]
        for stimulus, spec in sessions["stimuli"].items()
        if _plays(app, entry, spec or {})
        for rep in range(1, int(entry.get("repetitions", sessions["repetitions"])) + 1)
    ]


def _plays(app: str, entry: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    """Whether ``app`` plays a stimulus: the stimulus may name its apps, the app its kinds."""
    kind = spec.get("kind", "speech")
    return app in spec.get("apps", [app]) and kind in entry.get("stimulus_kinds", [kind])


def evidence_files(driver: str) -> tuple[str, ...]:
    """Every evidence file a session of this driver publishes besides the manifest."""
    return (*EVIDENCE, *get_driver(driver).extra_evidence)


def apps_with_evidence(sessions: Mapping[str, Any], name: str) -> list[str]:
    """The configured apps whose sessions publish the extra evidence file ``name``."""
    return [
        app
        for app, entry in sessions["apps"].items()
        if name in get_driver(entry["driver"]).extra_evidence
    ]


def session_dir(app: str, mode: str, stimulus: str, rep: int, root: str = "results/raw") -> str:
    """``results/raw/{app}/{mode}-{stimulus}/rep{rep}``: the raw-evidence directory."""
    return f"{root}/{app}/{mode}-{stimulus}/rep{rep}"


# --- helpers of the Snakemake rule (workflow/rules/sessions.smk) -------------------------

PACKAGE = Path(__file__).resolve().parent


def rule_params(sessions: Mapping[str, Any], app: str) -> dict[str, Any]:
    """The config of one app's sessions only, so that editing another app reruns nothing
    (nor editing what only selects sessions: its repetitions and stimulus kinds, or the
    shared schedule of an app that has its own)."""
    entry = {
        k: v for k, v in sessions["apps"][app].items() if k not in ("repetitions", "stimulus_kinds")
    }
    keep = ("schedule", "lead_s", "tail_s", "timeout_margin_s", "capture_tool", "audio")
    shared = {key: sessions[key] for key in keep if not (key == "schedule" and "schedule" in entry)}
    return {**shared, "apps": {app: entry}}


def instrument_code(driver: str) -> list[str]:
    """The package files a driver's sessions run: editing one reruns those sessions."""
    files = ["session.py", "audio.py", "capture.py", "tracing.py", "netns.py"]
    files += ["drivers/__init__.py", "agents/mic_reads.js"]
    # linphone calls the same baresip peer as the baresip driver; a profile is the Chromium
    # driver on its own page, with the telemetry collector
    files += [
        f"drivers/{d}.py"
        for d in {"linphone": ("linphone", "baresip"), "profile": ("profile", "chromium")}.get(
            driver, (driver,)
        )
    ]
    if driver in ("chromium", "profile"):
        files += ["web/meeting.html", "web/meeting.js"]
    if driver == "profile":
        files += ["web/profile.html", "web/profile.js", "web/gain-worklet.js", "collector.py"]
    if driver.startswith("native-"):  # run by the host runner with the native agents
        files = ["session.py", "hostsession.py", "capture.py", "drivers/__init__.py"]
        files += ["drivers/native.py", "agents/native_core.js", "agents/wasapi.js"]
        files += ["agents/coreaudio.js", "apps.py"]
    if driver == "web":
        files += ["drivers/chromium.py", "drivers/native.py", "uplink.py", "apps.py"]
    paths = [str(PACKAGE / f) for f in files]
    if driver.startswith("native-") or driver == "web":  # hotkeys, processes, selectors
        paths.append(str(PACKAGE.parents[1] / "workflow" / "apps.yaml"))
    return paths


def name_pattern(names: Iterable[str]) -> str:
    """A wildcard constraint matching exactly these names (and nothing, given none)."""
    return "|".join(re.escape(n) for n in sorted(set(names), key=len, reverse=True)) or "(?!)"


# --- failures and events ----------------------------------------------------------------


class SessionFailure(RuntimeError):
    """A step of the session failed; ``component`` names what failed."""

    def __init__(self, step: str, component: str, error: str) -> None:
        super().__init__(f"{step}: {component}: {error}")
        self.step, self.component, self.error = step, component, error

    def record(self) -> dict[str, str]:
        return {"step": self.step, "component": self.component, "error": self.error}


class EventLog:
    """events.jsonl being written: one line per event, ``t`` on the session clock."""

    def __init__(self, path: Path, t0: float) -> None:
        self.t0 = t0
        self.fh = path.open("w", buffering=1)
        self.lock = threading.Lock()

    def __call__(self, event: str, t: float | None = None, **fields: Any) -> float:
        t = time.monotonic() - self.t0 if t is None else t
        row = {"t": round(t, 6), "event": event, **fields}
        with self.lock:
            self.fh.write(json.dumps(row, default=str) + "\n")
        return t

    def close(self) -> None:
        self.fh.close()


def _describe_exit(rc: int | None) -> str:
    if rc is None:
        return "is still running"
    if rc < 0:
        return f"was killed by {signal.Signals(-rc).name}"
    return f"exited with status {rc}"


# --- the inner runner (inside the namespace) --------------------------------------------


class InnerRunner:
    """Runs one session inside the network namespace; see the module docstring."""

    def __init__(self, spec: SessionSpec, stage: Path, scratch: Path) -> None:
        self.spec = spec
        self.stage = stage
        self.scratch = scratch
        self.parts = stage / "parts"
        self.logs = stage / "logs"
        self.evidence = stage / "evidence"
        for d in (self.parts, self.logs, self.evidence):
            d.mkdir(parents=True, exist_ok=True)
        self.procs = netns.ProcessSet(stage / "pids.jsonl")
        self.step = "start"
        self.t0 = time.monotonic()
        self.epoch0 = time.time()
        self.events = EventLog(self.parts / "events.runner.jsonl", self.t0)
        self.driver: Driver | None = None
        self.result: dict[str, Any] = {}

    def now(self) -> float:
        return time.monotonic() - self.t0

    def enter(self, step: str) -> None:
        self.step = step
        write_json(self.stage / "status.json", {"step": step, "t": round(self.now(), 3)})

    def check_health(self, grace_s: float = 0.0) -> None:
        """Fail the session if any process it started has died unasked.

        ``grace_s``: after an error, a process's death may take a moment to be visible;
        waiting a little lets the failure name the process rather than its symptom.
        """
        deadline = time.monotonic() + grace_s
        while True:
            for managed in self.procs.dead():
                raise SessionFailure(
                    self.step,
                    managed.role,
                    f"{managed.role} (pid {managed.pid}) {_describe_exit(managed.returncode())}",
                )
            if time.monotonic() >= deadline:
                return
            time.sleep(0.02)

    def wait_until(self, deadline_t: float) -> None:
        """Sleep until session time ``deadline_t``, checking every process as we go."""
        while True:
            self.check_health()
            if self.driver is not None:
                with self.blame("client"):
                    self.driver.poll()
            left = deadline_t - self.now()
            if left <= 0:
                return
            time.sleep(min(0.05, left))

    @contextlib.contextmanager
    def blame(self, component: str) -> Iterator[None]:
        """Turn any error of a step into a SessionFailure naming the step and component.

        A dead process is the more precise explanation, so it is checked first.
        """
        try:
            yield
        except SessionFailure:
            raise
        except Exception as exc:
            self.check_health(grace_s=0.5)
            raise SessionFailure(self.step, component, f"{type(exc).__name__}: {exc}") from exc

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
        self.events("pulse_ready", pid=pulse.pid, source="mic", server=paths.server)
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
        argv = [sys.executable, "-m", "reallymuted.audio", "feed", "--fifo", str(paths.fifo)]
        argv += ["--stimulus", spec.stimulus_path, "--out", str(out), "--t0", repr(self.t0)]
        argv += ["--rate", str(spec.rate), "--channels", str(spec.channels)]
        argv += ["--tick-ms", str(spec.tick_ms), "--pipe-bytes", str(spec.pipe_bytes)]
        argv += ["--reader-pid", str(pulse.pid if pulse else 0)]
        with self.blame("writer"):
            writer = self.procs.start("writer", argv, output=self.logs / "writer.log")
            deadline = time.monotonic() + 10
            while not (out.exists() and out.stat().st_size > 0):
                if writer.returncode() is not None:
                    raise RuntimeError(f"writer {_describe_exit(writer.returncode())}")
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
        )

    def start_tracer(self, roots: list[int], skip: tuple[str, ...]) -> None:
        self.enter("tracer")
        argv = [sys.executable, "-m", "reallymuted.tracing", "--t0", repr(self.t0)]
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
            tracer = self.procs.start(
                "tracer",
                argv,
                stdout=subprocess.PIPE,
                output=self.logs / "tracer.log",
                text=True,
                env={**os.environ, "TMPDIR": str(tmp), "HOME": str(tmp)},
            )
            ready = _read_line(tracer.popen.stdout, timeout=30.0)
            if ready is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    tracer.popen.wait(2.0)
                raise RuntimeError(f"tracer not ready: it {_describe_exit(tracer.returncode())}")
        self.result["tracer_roots"] = roots
        self.result["tracer_ready"] = json.loads(ready).get("ready")

    def wait_traced(self, roots: list[int], timeout: float = 30.0) -> None:
        """Wait until every process now in the client's tree is attached (or gone)."""
        self.enter("tracer")
        status = self.parts / "tracer.status.json"
        deadline = time.monotonic() + timeout
        while True:
            self.check_health()
            covered = set((_read_json(status) or {}).get("covered", []))
            tree = netns.descendants(roots)
            if tree <= covered:
                return
            if time.monotonic() > deadline:
                raise SessionFailure(
                    "tracer", "tracer", f"processes {sorted(tree - covered)} not attached in time"
                )
            time.sleep(0.02)

    def play_schedule(self, driver: Driver) -> None:
        spec = self.spec
        self.enter("join")
        stimulus_t = self.events_first("stimulus_start")
        self.wait_until(stimulus_t + spec.lead_s)
        t = self.now()
        with self.blame("client"):
            extra = driver.join()
        join_t = self.events("join", t=t, took_s=round(self.now() - t, 3), **extra)
        self.result["join_t"] = join_t
        cpu_at_join = netns.tree_cpu_s(self.result["client_roots"])
        self.enter("schedule")
        muted = False
        boundary = join_t
        for phase in spec.schedule:
            want = phase["state"] == "muted"
            if want != muted:
                t = self.now()
                with self.blame("client"):
                    extra = driver.set_muted(want)
                self.events(
                    "mute" if want else "unmute", t=t, took_s=round(self.now() - t, 3), **extra
                )
                muted = want
            boundary += float(phase["seconds"])
            self.wait_until(boundary)
        self.enter("leave")
        t = self.now()
        with self.blame("client"):
            extra = driver.leave()
        self.result["leave_t"] = self.events("leave", t=t, took_s=round(self.now() - t, 3), **extra)
        # the client's CPU time between join and leave: what the tracer's cost is measured by
        self.result["client_cpu_s"] = round(
            netns.tree_cpu_s(self.result["client_roots"]) - cpu_at_join, 3
        )
        self.enter("tail")
        self.wait_until(self.now() + spec.tail_s)

    def events_first(self, name: str) -> float:
        self.events.fh.flush()
        for row in read_jsonl(self.parts / "events.runner.jsonl"):
            if row["event"] == name:
                return float(row["t"])
        raise SessionFailure(self.step, "runner", f"no {name} event")

    def stop(self) -> None:
        """Stop in an order that loses nothing: tracer (drains its agents), client, mic, capture."""
        self.enter("stop")
        self.check_health()
        tracer = self.procs.get("tracer")
        if tracer is not None:
            rc = self.procs.stop(tracer, timeout=10.0)
            if rc != 0:
                raise SessionFailure("stop", "tracer", f"tracer {_describe_exit(rc)} on stop")
        if self.driver is not None:
            with self.blame("client"):
                self.driver.stop()
        self.events("client_stop")
        for role, ok in (("writer", (0,)), ("capture", (0,))):
            managed = self.procs.get(role)
            if managed is not None:
                rc = self.procs.stop(managed, timeout=5.0)
                if rc not in ok:
                    raise SessionFailure("stop", role, f"{role} {_describe_exit(rc)} on stop")
        self.events("capture_stop")
        pulse = self.procs.get("pulseaudio")
        if pulse is not None:
            self.procs.stop(pulse, timeout=3.0)
        self.result["strays"] = self.stop_strays()
        self.result["end_t"] = self.events("session_end")

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
        events = read_jsonl(self.parts / "events.runner.jsonl")
        tracer_events = self.parts / "events.tracer.jsonl"
        if tracer_events.exists():
            events += read_jsonl(tracer_events)
        events.sort(key=lambda r: r["t"])
        reads = read_jsonl(self.parts / "mic_os.jsonl")
        app_reads = self.parts / "mic_app.jsonl"
        if app_reads.exists():
            reads += read_jsonl(app_reads)
        reads.sort(key=lambda r: r["t"])

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

        _write_lines(self.evidence / "events.jsonl", events)
        _write_lines(self.evidence / "mic_trace.jsonl", reads)
        with atomic_path(self.evidence / "client.log") as tmp, tmp.open("wb") as out:
            for label, path in driver.logs:
                out.write(f"==> {label} <==\n".encode())
                if path.exists():
                    out.write(path.read_bytes())
        (self.parts / "traffic.pcapng").replace(self.evidence / "traffic.pcapng")
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
        self.events(
            "session_start",
            t=0.0,
            epoch=self.epoch0,
            monotonic=self.t0,
            utc=_utc(self.epoch0),
            clock="CLOCK_MONOTONIC",
        )
        self.result.update(t0_monotonic=self.t0, t0_epoch=self.epoch0)
        paths = self.start_pulse()
        # Clients get the private daemon and a private HOME (no user config in, no files out).
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        env.update(PULSE_SERVER=paths.server, HOME=str(self.scratch / "client"))
        ctx = SessionContext(
            app=spec.app,
            mode=spec.mode,
            options=spec.options,
            workdir=self.scratch / "client",
            logdir=self.logs,
            procs=self.procs,
            env=env,
            event=self.events,
            epoch_to_t=lambda e: e - self.epoch0,
            t0=self.t0,
        )
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        driver = get_driver(spec.driver)(ctx)
        self.driver = driver
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
        # The tracer attaches while the client gets ready (page load, registration...), and
        # the client's tree is fully traced before it joins.
        if spec.trace_app:
            self.start_tracer(roots, driver.trace_skip)
        else:
            self.events("tracer_disabled")
        self.enter("prepare")
        with self.blame("client"):
            driver.prepare()
        self.events("client_ready")
        if spec.trace_app:
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


def _utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="microseconds")


def _write_lines(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, tmp.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


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
    runner = InnerRunner(spec, stage, scratch)

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


# --- the supervisor (host namespace) ----------------------------------------------------


def _versions(spec: SessionSpec) -> dict[str, str]:
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
        "app": get_driver(spec.driver).version(spec.options),
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
    from reallymuted import hostsession  # (it imports this module)

    if hostsession.runs_on_host(spec.driver):  # a Windows/macOS driver: no netns, no PulseAudio
        return hostsession.run_host_session(spec, outdir)
    started_mono, started_epoch = time.monotonic(), time.time()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    published = EVIDENCE
    with contextlib.suppress(ValueError):  # an unknown driver fails at preflight below
        published = evidence_files(spec.driver)
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
    version_thread = threading.Thread(target=lambda: versions.update(_versions(spec)))
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
        wants_uplink = uplink.required(spec.driver, spec.options)  # refuses without internet
        netns.preflight(["pulseaudio", "pactl", spec.capture_tool])
        get_driver(spec.driver).check_programs()
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
        argv = [*netns.exec_prefix(name), sys.executable, "-m", "reallymuted.session", "inner"]
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
            status = _read_json(stage / "status.json") or {}
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
            failure = _read_json(stage / "failure.json")
            if failure is None:
                status = _read_json(stage / "status.json") or {}
                failure = {
                    "step": status.get("step", "start"),
                    "component": "runner",
                    "error": f"the inner runner {_describe_exit(inner_rc)}",
                }
    except _Interrupted as exc:
        status = _read_json(stage / "status.json") or {"step": step}
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
    inner = _read_json(stage / "inner.json") or {}
    manifest = _manifest(spec, inner, versions, failure, cleanup, name)
    t0_mono = inner.get("t0_monotonic", started_mono)
    manifest["supervisor"] = {
        "started_utc": _utc(started_epoch),
        "ended_utc": _utc(ended_epoch),
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


ATTEMPTS = "failed-attempts"


def _keep_failed_attempt(outdir: Path) -> list[dict[str, Any]]:
    """If the session's last attempt failed (its failure manifest is still in ``outdir``: this
    run is a retry), move that manifest to ``failed-attempts/`` and return this run's failed
    attempts: those it listed, then itself (file, start time, failure). A run after a success
    is no retry: it returns none, and files of older runs' attempts stay where they are."""
    failed = outdir / FAILED
    if not failed.is_file():
        return []
    data = _read_json(failed) or {}
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


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def manifest_core(
    spec: Any,
    result: Mapping[str, Any],
    failure: Mapping[str, Any] | None,
    source: str,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """The keys every session manifest has, on the testbed and on a host: status, what was
    run (app, mode, schedule, stimulus with its digest) and when, on the session's clock
    (``result``'s ``t0_epoch``, ``t0_monotonic`` and ``end_t``)."""
    t0_epoch = result.get("t0_epoch")
    start = end = None
    if t0_epoch is not None:
        start = {"utc": _utc(t0_epoch), "epoch": t0_epoch, "monotonic": result["t0_monotonic"]}
        if "end_t" in result:
            end = {
                "utc": _utc(t0_epoch + result["end_t"]),
                "epoch": t0_epoch + result["end_t"],
                "monotonic": result["t0_monotonic"] + result["end_t"],
                "t": result["end_t"],
            }
    stimulus = {"name": spec.stimulus, "path": spec.stimulus_path, "sha256": None}
    with contextlib.suppress(OSError):
        stimulus["sha256"] = sha256_file(spec.stimulus_path)
    return {
        "schema": SCHEMA,
        "status": "failed" if failure else "ok",
        "exit_status": 1 if failure else 0,
        "failure": dict(failure) if failure else None,
        "source": source,
        "app": spec.app,
        "driver": spec.driver,
        "mode": spec.mode,
        "condition": spec.condition,
        "rep": spec.rep,
        "options": dict(options),
        "schedule": {"phases": spec.schedule, "lead_s": spec.lead_s, "tail_s": spec.tail_s},
        "stimulus": stimulus,
        "start": start,
        "end": end,
        "start_epoch": start["epoch"] if start else None,  # = start.epoch, for pcap times
    }


def _manifest(
    spec: SessionSpec,
    inner: Mapping[str, Any],
    versions: Mapping[str, str],
    failure: Mapping[str, Any] | None,
    cleanup: Mapping[str, Any],
    netns_name: str,
) -> dict[str, Any]:
    shown = {k: v for k, v in failure.items() if k != "traceback"} if failure else None
    return {
        **manifest_core(spec, inner, shown, _source(spec.driver), spec.options),
        "microphone": {
            "source": "module-pipe-source",
            "rate": spec.rate,
            "channels": spec.channels,
            "format": "s16le",
            "tick_ms": spec.tick_ms,
            "pipe_bytes": spec.pipe_bytes,
            "suspend_timeout_s": spec.suspend_timeout_s,
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


def _source(driver: str) -> str:
    """Where the evidence comes from, as the driver declares it (``unknown`` for no driver)."""
    try:
        return get_driver(driver).source
    except ValueError:
        return "unknown"


def _log_failure(stage: Path, manifest: Mapping[str, Any]) -> dict[str, list[str]]:
    """Put the failure and the tails of the daemons' logs into the session log; return the
    tails (log name -> its last 40 lines, empty logs left out)."""
    log.error("session FAILED: %s", json.dumps(manifest["failure"]))
    failure = _read_json(stage / "failure.json")
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


# --- a quick look at one session's evidence -------------------------------------------


def phases(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The mute timeline from events.jsonl: before join, each (un)muted phase, after leave."""
    marks = [e for e in events if e["event"] in ("join", "mute", "unmute", "leave")]
    end = max((e["t"] for e in events if e["event"] == "session_end"), default=marks[-1]["t"])
    out = [{"state": "before_join", "start": 0.0, "end": marks[0]["t"]}]
    state = "unmuted"
    for mark, following in itertools.pairwise(marks):
        state = {"mute": "muted", "unmute": "unmuted"}.get(mark["event"], state)
        out.append({"state": state, "start": mark["t"], "end": following["t"]})
    out.append({"state": "after_leave", "start": marks[-1]["t"], "end": end})
    return out


def summarise(outdir: str | Path, margin_s: float = 0.5) -> dict[str, Any]:
    """Per phase: how much each witness saw and the client's RTP rate.

    Each phase is judged on [start + margin_s, end), so the moments right after a change
    (a stream closing, a getUserMedia) are not counted against the new state. The
    instrument's own check, used by the tests and by hand; the extract and micpolicy stages
    do the study's analysis.
    """
    outdir = Path(outdir)
    manifest = json.loads((outdir / MANIFEST).read_text())
    events = read_jsonl(outdir / "events.jsonl")
    reads = read_jsonl(outdir / "mic_trace.jsonl")
    bytes_per_s = manifest["microphone"]["rate"] * 2 * manifest["microphone"]["channels"]
    ports = set((manifest.get("client") or {}).get("ports", []))
    epoch0 = manifest["start"]["epoch"]
    rtp = [
        p["time"] - epoch0
        for p in capture.rtp_packets(outdir / "traffic.pcapng")
        if p["sport"] in ports
    ]
    rows = []
    for phase in phases(events):
        lo, hi = phase["start"] + margin_s, phase["end"]
        if hi - lo <= 0:
            continue
        os_rows = [r for r in reads if r["api"] == audio.OS_API and lo <= r["t"] < hi]
        app_rows = [r for r in reads if r["api"] != audio.OS_API and lo <= r["t"] < hi]
        rows.append(
            {
                **phase,
                "window_s": round(hi - lo, 3),
                "os_read_fraction": round(
                    sum(r["bytes"] for r in os_rows) / bytes_per_s / (hi - lo), 3
                ),
                "os_ticks_read": sum(1 for r in os_rows if r["bytes"]),
                "app_reads": len(app_rows),
                "app_reads_per_s": round(len(app_rows) / (hi - lo), 2),
                "app_peak_max": max((r["peak"] or 0.0 for r in app_rows), default=None),
                "rtp_pkts_per_s": round(sum(1 for t in rtp if lo <= t < hi) / (hi - lo), 2),
            }
        )
    return {"app": manifest["app"], "condition": manifest["condition"], "phases": rows}


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
        prog="python -m reallymuted.session",
        description="Run one testbed session (needs root). With --config, app/mode/stimulus "
        "name a session of the study; otherwise give --driver, --stimulus WAV and --phase.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one session and publish its raw evidence")
    run.add_argument("--out", type=Path, help="output directory (default: results/raw/...)")
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
    inner = sub.add_parser("inner", help=argparse.SUPPRESS)
    inner.add_argument("spec", type=Path)
    args = parser.parse_args(argv)

    if args.command == "inner":
        return run_inner(args.spec)
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
        from reallymuted.stimuli import make_stimulus

        repo = Path(__file__).resolve().parents[2]
        config = validate_config(
            load_yaml(args.config), repo / "workflow/schemas/config.schema.yaml"
        )
        sessions = config["sessions"]
        wav = Path(f"results/stimuli/{args.stimulus}.wav")
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


def main_for_snakemake(snakemake: Any) -> None:
    """Body of scripts/session_run.py: run the rule's session, fail the job on failure."""
    params = snakemake.params
    spec = SessionSpec.from_config(
        params.sessions,
        snakemake.wildcards.app,
        snakemake.wildcards.mode,
        snakemake.wildcards.stimulus,
        int(snakemake.wildcards.rep),
        snakemake.input.stimulus,
    )
    manifest = run_session(spec, Path(snakemake.output.manifest).parent)
    if manifest["status"] != "ok":
        failure = manifest["failure"]
        raise SystemExit(
            f"session failed at step {failure['step']} ({failure['component']}): "
            f"{failure['error']}; see manifest.failed.json"
        )


if __name__ == "__main__":
    sys.exit(_main())
