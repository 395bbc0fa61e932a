"""What the two session runners share: the session clock, steps and blame, the schedule.

:class:`Runner` plays one session's schedule through its driver: wait, join, mute and unmute
at the phase boundaries, leave, then the tail; it writes every step to ``status.json`` and
every action to the events log, and turns any error into a :class:`SessionFailure` naming the
step and the component to blame. The namespace runner (Linux testbed) and the host runner
(Windows, macOS) extend it with how they start things and what they can check.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from reallymuted.io import atomic_path, read_jsonl, write_json
from reallymuted.testbed.contract import EventLog, SessionFailure, utc, write_lines
from reallymuted.testbed.drivers import Driver, SessionContext, get_driver
from reallymuted.testbed.spec import SessionSpec


class Runner(ABC):
    """One session in this process; ``stage`` is its private working folder."""

    clock_name = "CLOCK_MONOTONIC"  # what the session clock is, for the session_start event

    def __init__(self, spec: SessionSpec, stage: Path) -> None:
        self.spec = spec
        self.stage = stage
        self.parts = stage / "parts"  # pieces of the evidence, merged by collect()
        self.logs = stage / "logs"
        self.evidence = stage / "evidence"  # the finished evidence files
        for d in (self.parts, self.logs, self.evidence):
            d.mkdir(parents=True, exist_ok=True)
        self.step = "start"
        self.t0 = time.monotonic()
        self.epoch0 = time.time()
        self.events = EventLog(self.parts / "events.runner.jsonl", self.t0)
        self.driver: Driver | None = None
        self.result: dict[str, Any] = {}

    # -- clock, steps, blame -------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self.t0

    def enter(self, step: str) -> None:
        """The session is at ``step`` (also in ``status.json``, for whoever supervises it)."""
        self.step = step
        write_json(self.stage / "status.json", {"step": step, "t": round(self.now(), 3)})

    @abstractmethod
    def check(self, grace_s: float = 0.0) -> None:
        """Fail the session if something it started died unasked (or its time is up).

        ``grace_s``: after an error, a process's death may take a moment to be visible;
        waiting a little lets the failure name the process rather than its symptom.
        """

    def wait_until(self, deadline_t: float) -> None:
        """Sleep until session time ``deadline_t``, checking as we go; the driver is polled."""
        while True:
            self.check()
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
            self.check(grace_s=0.5)
            raise SessionFailure(self.step, component, f"{type(exc).__name__}: {exc}") from exc

    # -- the session ------------------------------------------------------------------------
    def start_clock(self) -> None:
        """The first event: where the session clock starts, in every clock there is."""
        self.events(
            "session_start",
            t=0.0,
            epoch=self.epoch0,
            monotonic=self.t0,
            utc=utc(self.epoch0),
            clock=self.clock_name,
        )
        self.result.update(t0_monotonic=self.t0, t0_epoch=self.epoch0)

    def make_driver(self, **context: Any) -> Driver:
        """The session's driver, resolved once, with the runner's clock and events."""
        ctx = SessionContext(
            app=self.spec.app,
            mode=self.spec.mode,
            options=self.spec.options,
            logdir=self.logs,
            event=self.events,
            epoch_to_t=lambda e: e - self.epoch0,
            t0=self.t0,
            **context,
        )
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        self.driver = get_driver(self.spec.driver)(ctx)
        return self.driver

    def join_at(self) -> float:
        """Session time at which to join (the microphone fed ``lead_s`` by then)."""
        return self.now() + self.spec.lead_s

    def joined(self, issued_t: float) -> dict[str, Any]:
        """Called once the driver's join returned: extra fields for the ``join`` event."""
        return {}

    def schedule_origin(self, join_t: float) -> float:
        """Where the first phase of the schedule starts counting."""
        return join_t

    def left(self) -> None:  # noqa: B027 (optional step)
        """Called once the driver's leave returned."""

    def os_mute(self, muted: bool) -> dict[str, Any]:
        """The OS-level mute beside the client's own (a guarded session); what was done."""
        return {}

    def play_schedule(self, driver: Driver) -> None:
        """Join, mute and unmute at the phase boundaries, leave, then the tail."""
        spec = self.spec
        self.enter("join")
        self.wait_until(self.join_at())
        t = self.now()
        with self.blame("client"):
            extra = driver.join()
        extra.update(self.joined(t))
        join_t = self.events("join", t=t, took_s=round(self.now() - t, 3), **extra)
        self.result["join_t"] = join_t
        self.enter("schedule")
        muted = False
        boundary = self.schedule_origin(join_t)
        for phase in spec.schedule:
            want = phase["state"] == "muted"
            if want != muted:
                t = self.now()
                extra = self.os_mute(want)  # first: the OS mutes before the app does
                with self.blame("client"):
                    extra.update(driver.set_muted(want))
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
        self.left()
        self.enter("tail")
        self.wait_until(self.now() + spec.tail_s)

    # -- evidence ---------------------------------------------------------------------------
    def gather(self, *parts: str) -> list[dict[str, Any]]:
        """The rows of the given parts that exist, in time order."""
        rows = [r for n in parts if (self.parts / n).exists() for r in read_jsonl(self.parts / n)]
        rows.sort(key=lambda r: r["t"])
        return rows

    def publish(
        self,
        events: Sequence[Mapping[str, Any]],
        reads: Sequence[Mapping[str, Any]],
        sections: Sequence[tuple[str, Path]],
    ) -> None:
        """Write the contract's evidence files into ``evidence/``: events, microphone reads,
        the client log (one ``==> label <==`` section per file, each file once) and the
        capture."""
        write_lines(self.evidence / "events.jsonl", events)
        write_lines(self.evidence / "mic_trace.jsonl", reads)
        with atomic_path(self.evidence / "client.log") as tmp, tmp.open("wb") as out:
            done: set[Path] = set()
            for label, path in sections:
                if path in done:
                    continue
                done.add(path)
                out.write(f"==> {label} <==\n".encode())
                if path.exists():
                    out.write(path.read_bytes())
        (self.parts / "traffic.pcapng").replace(self.evidence / "traffic.pcapng")
