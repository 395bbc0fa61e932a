"""Drivers: one small class per client, so the session runner never special-cases an app.

A driver starts its client (already pointed at the session's private PulseAudio), joins a
meeting or call, mutes and unmutes it the way that client does, and leaves. It also says which
processes the tracer should follow, which traffic is the harness's own control channel (kept
out of the capture), which ports are the client's side of its flows, and the client's version.

Life cycle, as the runner calls it::

    driver = get_driver(name)(ctx)     # ctx: SessionContext
    driver.start()                     # client process(es) launched; returns quickly
    driver.trace_roots()               # PIDs whose process trees the tracer follows
    driver.prepare()                   # client ready to join (meanwhile the tracer attaches)
    driver.join()  /  driver.set_muted(True|False) ...  /  driver.leave()
    driver.stop()                      # client processes gone
"""

from __future__ import annotations

import importlib
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from reallymuted.testbed.netns import Managed, ProcessSet

# driver name -> "module:Class"; imported lazily so a session pays only for its own client.
REGISTRY = {
    "control": "reallymuted.testbed.drivers.control:ControlDriver",
    "chromium": "reallymuted.testbed.drivers.chromium:ChromiumDriver",
    "baresip": "reallymuted.testbed.drivers.baresip:BaresipDriver",
    "linphone": "reallymuted.testbed.drivers.linphone:LinphoneDriver",
    "profile": "reallymuted.testbed.drivers.profile:ProfileDriver",
    "native-windows": "reallymuted.testbed.drivers.native:WindowsDriver",
    "native-macos": "reallymuted.testbed.drivers.native:MacDriver",
    "web": "reallymuted.testbed.drivers.web:WebAppDriver",
    "sdk": "reallymuted.testbed.drivers.sdk:SdkDriver",
    "sdk-preview": "reallymuted.testbed.drivers.sdk:SdkPreviewDriver",
}


class DriverError(RuntimeError):
    """The client did not do what it was asked (no call established, mute not confirmed…)."""


@dataclass
class SessionContext:
    """What a driver gets from the runner."""

    app: str
    mode: str
    options: Mapping[str, Any]
    workdir: Path  # private scratch directory (profiles, configs, sockets)
    logdir: Path  # where client output files go
    procs: ProcessSet
    env: Mapping[str, str]  # base environment: PULSE_SERVER of the private daemon, etc.
    event: Callable[..., float]  # event(name, **fields) -> t, on the session clock
    epoch_to_t: Callable[[float], float] = field(default=lambda e: e)  # wall clock -> t
    t0: float = 0.0  # the session clock's origin on CLOCK_MONOTONIC (t = monotonic - t0)


class Driver(ABC):
    """The interface every client driver implements."""

    name: ClassVar[str]
    modes: ClassVar[tuple[str, ...]]
    # Where the evidence comes from (DESIGN.md, "drivers and sources"): the manifest's and
    # every table's `source` column.
    source: ClassVar[str] = "testbed"
    # Who runs its sessions: the Linux testbed's supervisor ("testbed") or, for a desktop
    # app on Windows or macOS, the host runner ("host": reallymuted.testbed.host).
    runner: ClassVar[str] = "testbed"
    # Evidence files this driver adds to the contract's four (docs/evidence.md);
    # `evidence()` says where each one is once the client has stopped.
    extra_evidence: ClassVar[tuple[str, ...]] = ()
    programs: ClassVar[tuple[str, ...]] = ()  # executables that must exist
    # Substrings of the command lines of the client's processes that cannot open an audio
    # device (sandboxed renderers…): not traced, to keep attach time down. Each skip is on
    # record as a `trace_skip` event.
    trace_skip: ClassVar[tuple[str, ...]] = ()
    # Whether prepare() may already read the microphone (a real app's pre-join preview):
    # then the tracer is attached before it, rather than while it runs.
    reads_while_preparing: ClassVar[bool] = False
    # The options it takes, when it checks them (an unknown one is a typo: rejected by `check`).
    options: ClassVar[frozenset[str] | None] = None

    def __init__(self, ctx: SessionContext) -> None:
        self.ctx = ctx
        self.check(ctx.mode, ctx.options)
        self.logs: list[tuple[str, Path]] = []  # (label, file) that make up client.log

    @classmethod
    def check(cls, mode: str, options: Mapping[str, Any]) -> None:
        """Reject a mute mode or option this driver does not know (cheap: no I/O).

        Called when the workflow builds its job list, so a typo fails before anything runs.
        """
        if mode not in cls.modes:
            raise ValueError(f"driver {cls.name}: mode {mode!r} not in {', '.join(cls.modes)}")
        unknown = set(options) - cls.options if cls.options is not None else set()
        if unknown:
            raise ValueError(
                f"driver {cls.name}: unknown option(s) {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(sorted(cls.options or ()))}"
            )

    @classmethod
    def check_programs(cls) -> None:
        """The client's executables must exist (checked when a session starts)."""
        missing = [p for p in cls.programs if shutil.which(p) is None]
        if missing:
            raise DriverError(f"driver {cls.name}: missing program(s) {', '.join(missing)}")

    @classmethod
    def version(cls, options: Mapping[str, Any]) -> str:
        """The client's version string, for the manifest."""
        return "unknown"

    @classmethod
    def client_code(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """The code the client ran beyond its program (a vendor library's packages, versions
        and hashes), for the manifest's ``client_code``; empty for most clients."""
        return {}

    def capture_filter(self) -> str | None:
        """BPF filter excluding the harness's own control channel from the capture, if any."""
        return None

    def endpoints(self) -> dict[str, Any]:
        """Addresses/ports of the client, its peer and the harness, so analysis can tell flows."""
        return {}

    def client_traffic(self) -> dict[str, Any]:
        """How to read the client's packets: ``ports`` it sends from (its side of every flow)
        and, when they apply, ``audio_level_ext_id`` (the negotiated RFC 6464 header
        extension id) and ``decode_as`` (tshark ``-d`` rules)."""
        return {"ports": []}

    def log_file(self, label: str) -> Path:
        path = self.ctx.logdir / f"client-{label}.log"
        self.logs.append((label, path))
        return path

    def start_process(self, role: str, argv: list[str], label: str, **kwargs: Any) -> Managed:
        """Start one client process with its output in its own section of client.log."""
        return self.ctx.procs.start(role, argv, output=self.log_file(label), **kwargs)

    @abstractmethod
    def start(self) -> None:
        """Launch the client's process(es) and return as soon as their PIDs are known."""

    def prepare(self) -> None:  # noqa: B027 (optional step: most clients need nothing)
        """Bring the client to "ready to join" (runs while the tracer attaches)."""

    @abstractmethod
    def trace_roots(self) -> list[int]:
        """PIDs whose process trees hold the client's audio capture."""

    @abstractmethod
    def join(self) -> dict[str, Any]:
        """Join the meeting or call; return extra fields for the ``join`` event."""

    @abstractmethod
    def set_muted(self, muted: bool) -> dict[str, Any]:
        """Mute or unmute the way this client does; return extra fields for the event."""

    @abstractmethod
    def leave(self) -> dict[str, Any]:
        """Leave the meeting or call; return extra fields for the ``leave`` event."""

    def evidence(self) -> dict[str, Path]:
        """Each of ``extra_evidence`` -> the file holding it (called after ``stop``)."""
        return {}

    def poll(self) -> None:  # noqa: B027 (optional step)
        """Called about every 100 ms during the schedule (drivers may log client events)."""

    def stop(self) -> None:
        """Stop the client's processes (the runner kills whatever is left afterwards)."""
        for managed in reversed(self.ctx.procs.procs):
            if managed.role in ("client", "peer"):
                self.ctx.procs.stop(managed)


def close_quietly(*closers: Callable[[], object]) -> None:
    """Run each closer in turn, going on past failures: a driver's best-effort stop (the runner
    kills whatever is left)."""
    for closer in closers:
        try:
            closer()
        except Exception:
            continue


def wait_for_exec(pid: int, name: str, timeout: float) -> None:
    """Wait until process ``pid`` runs an executable called ``name`` (after a wrapper's exec)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if Path(f"/proc/{pid}/exe").readlink().name == name:
                return
        except OSError as exc:
            raise DriverError(f"process {pid} exited before running {name}") from exc
        if time.monotonic() > deadline:
            raise DriverError(f"process {pid} did not exec {name} within {timeout:.0f} s")
        time.sleep(0.01)


def driver_module(name: str) -> str:
    """The module that holds a driver (imported only when a session runs it)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown driver {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name].split(":")[0]


def check_apps(sessions: Mapping[str, Any]) -> None:
    """Every configured app's modes and options against its driver, so a mode the driver does
    not know stops the workflow before any job runs (cheap: no I/O)."""
    from reallymuted.study import driver_options

    for app, entry in sessions["apps"].items():
        options = driver_options(entry)
        for mode in entry["modes"]:
            try:
                get_driver(entry["driver"]).check(mode, options)
            except ValueError as exc:
                raise ValueError(f"sessions.apps.{app}: {exc}") from None


def get_driver(name: str) -> type[Driver]:
    if name not in REGISTRY:
        raise ValueError(f"unknown driver {name!r}; known: {', '.join(sorted(REGISTRY))}")
    module_name, cls_name = REGISTRY[name].split(":")
    cls: type[Driver] = getattr(importlib.import_module(module_name), cls_name)
    return cls
