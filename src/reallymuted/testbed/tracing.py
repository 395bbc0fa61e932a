"""The app-level witness: Frida hooks on the audio capture calls of a client's processes.

A tracer process attaches to the client's root process and to every process that appears
below it (polling the process tree: Chromium starts its audio service only when a page asks
for the microphone, from a zygote, which spawn or child gating would not see), and loads
``agents/mic_reads.js`` into each. The agent reports each read with the CLOCK_MONOTONIC time
of the call, so the tracer can put it on the session clock (seconds since the session's t0).

Output:

* ``--out``: one JSON line per read, ``{"t", "api", "pid", "tid", "frames", "bytes", "peak",
  "rms"}`` (the ``mic_trace.jsonl`` line format);
* ``--events``: what the tracer did, as session events (``trace_attach``, ``trace_hook``,
  ``trace_detach``, ``trace_skip`` for a process gone before it could be attached or excluded
  by the driver's ``--skip`` patterns, ``trace_error``), so coverage is on record next to
  the reads;
* ``--status``: ``{"covered": [pids]}``, rewritten whenever it changes (attached or skipped);
* stdout: one JSON line ``{"ready": [pids]}`` once the tree present at start is attached.

A process is attached once it is ``--min-age`` (0.5 s) old: injecting into a process in its
first moments (a zygote child, a process mid-exec) crashed Frida's loader and froze Chromium.
It is attached, too, only once its main thread has slept in system calls (a poll, a futex
wait...) through ``--settle`` (0.3 s), waiting at most ``--idle-wait`` s for that. Frida stops
the main thread to inject its loader, and the loader's thread allocates memory: if the main
thread was stopped while holding a lock the loader then needs (by all signs the allocator's:
Chromium's PartitionAlloc has one for the whole process), the loader waits for it forever, the
attach times out ("timed out trying to sync up with agent") and the process stays frozen, so
trying again fails too. The main thread was found stopped in madvise/mprotect or
mid-instruction, with the loader's thread and several of Chromium's own threads waiting on one
contended futex. Attaching to a Chromium browser process 0.5 s old this way failed in 8 of 239
tries on this 2-core machine under a load of 4-9 busy processes (November 2026); waiting for
the settled main thread, 1 of 295 (tried the same way). The rest is the thread waking between
the check and Frida's stop: a settled thread is only unlikely, not certain, to be inside the
allocator then. ``make bench`` (``tracer_attach``) measures both ways again.
The tracer stops cleanly on SIGTERM/SIGINT: it drains every agent's buffer, then detaches.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import frida

from reallymuted.testbed.netns import children_map, descendants, proc_stat

log = logging.getLogger(__name__)

AGENT = Path(__file__).parent / "agents" / "mic_reads.js"
RESOURCES = ("agents/mic_reads.js",)

# api values the agent writes (the OS witness adds "os:pipe-source", see reallymuted.testbed.audio)
APIS = (
    "pulse:pa_stream_peek",
    "pulse:pa_simple_read",
    "alsa:snd_pcm_readi",
    "alsa:snd_pcm_readn",
    "alsa:snd_pcm_mmap_commit",
    "pipewire:pw_stream_dequeue_buffer",
)


# Everything frida.attach/script.load can raise for one process; none should end the tracer.
FRIDA_ERRORS = tuple(
    getattr(frida, name) for name in dir(frida) if name.endswith("Error") and name[0].isupper()
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _age_s(pid: int) -> float | None:
    """Seconds since process ``pid`` started (10 ms resolution), None if it has gone."""
    stat = proc_stat(pid)
    if stat is None:
        return None
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - stat[2] / CLOCK_TICKS


def main_thread_asleep(pid: int) -> bool | None:
    """Whether process ``pid``'s main thread sleeps in a system call (state S: an event loop's
    poll, a futex wait...), so is not amid work such as the allocator's; None if it has gone."""
    try:
        syscall = Path(f"/proc/{pid}/task/{pid}/syscall").read_text().split()
        state = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    # the syscall file says "running" while on a CPU, -1 when stopped outside a syscall
    return state == "S" and syscall[0].isdigit()


def _role(pid: int) -> str:
    """What a Chromium-based process is (``--type=utility --utility-sub-type=audio...``): the
    command-line switches that say it, or "" (events name the process they are about)."""
    try:
        # a process title set by the process itself has spaces, not NULs, between arguments
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        args = raw.decode(errors="replace").split()
    except OSError:
        return ""
    return " ".join(a for a in args if a.startswith(("--type=", "--utility-sub-type=")))


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


class TreeTracer:
    """Attach the agent to a process tree and write what it reports."""

    def __init__(
        self,
        roots: list[int],
        t0: float,
        out: Path,
        events: Path,
        status: Path | None = None,
        workers: int = 4,
        min_age_s: float = 0.5,
        skip: tuple[str, ...] = (),
        idle_wait_s: float = 10.0,
        settle_s: float = 0.3,
    ) -> None:
        self.roots = roots
        self.t0 = t0
        self.source = AGENT.read_text()
        self.device = frida.get_local_device()
        self.sessions: dict[int, tuple[frida.core.Session, frida.core.Script]] = {}
        self.given_up: set[int] = set()
        self.lock = threading.Lock()
        self.status_lock = threading.Lock()
        self.out = out.open("w")
        self.events = events.open("w")
        self.stopping = threading.Event()
        self.reads = 0
        self.pending: set[int] = set()
        self.status = status
        self.min_age_s = min_age_s
        self.idle_wait_s = idle_wait_s
        self.settle_s = settle_s
        self.skip = skip
        # Each attach first waits for its process to settle (up to idle_wait_s); the pool lets
        # those waits overlap. The injections themselves do not: Frida injects one process at a
        # time (three started together all end together), 0.1-0.5 s each.
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="attach")

    # -- output ---------------------------------------------------------------------------
    def event(self, name: str, **fields: Any) -> None:
        row = {"t": round(time.monotonic() - self.t0, 6), "event": name, **fields}
        with self.lock:
            self.events.write(json.dumps(row) + "\n")
            self.events.flush()

    def write_reads(self, pid: int, rows: list[list[Any]]) -> None:
        lines = []
        for t, api, tid, frames, nbytes, peak, rms in rows:
            row = {"t": round(t - self.t0, 6), "api": api, "pid": pid, "tid": tid}
            row.update(frames=frames, bytes=nbytes)
            row.update(peak=None if peak is None else round(peak, 6))
            row.update(rms=None if rms is None else round(rms, 6))
            lines.append(json.dumps(row) + "\n")
        with self.lock:
            self.out.writelines(lines)
            self.reads += len(lines)

    def on_message(self, pid: int, message: dict[str, Any], _data: Any) -> None:
        if message.get("type") == "error":
            self.event("trace_error", pid=pid, error=message.get("description", "?"))
            log.error("agent error in pid %d: %s", pid, message.get("stack", message))
            return
        payload = message.get("payload") or {}
        kind = payload.get("type")
        if kind == "reads":
            self.write_reads(pid, payload["rows"])
        elif kind == "hook":
            fields = {k: payload[k] for k in ("module", "symbol", "ok", "error") if k in payload}
            self.event("trace_hook", pid=pid, **fields)

    # -- attaching --------------------------------------------------------------------------
    def wait_until_settled(self, pid: int) -> bool:
        """Wait up to ``idle_wait_s`` for ``pid``'s main thread to be found asleep in a system
        call at every sample (5 ms apart) through ``settle_s`` (see the module's docstring);
        False if it never was (or the process has gone). One sleeping sample is not enough:
        during start-up the thread wakes within the tenth of a second Frida takes to stop it."""
        deadline = time.monotonic() + self.idle_wait_s
        quiet_since = None
        while not self.stopping.is_set():
            now = time.monotonic()
            asleep = main_thread_asleep(pid)
            if asleep is None:
                return False  # gone: the attach reports it
            if not asleep:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= self.settle_s:
                return True
            if now > deadline:
                return False
            time.sleep(0.005)
        return False

    def attach(self, pid: int) -> bool:
        started = time.monotonic()
        comm, role = _comm(pid), _role(pid)  # read first: a failed injection can kill it
        asleep = self.wait_until_settled(pid)
        settled = time.monotonic()
        if not asleep and proc_stat(pid) is not None:
            log.warning("attaching to %d (%s) though its main thread stayed busy", pid, comm)
        try:
            session = self.device.attach(pid)
            # frida passes (reason, crash[, session]) depending on version: take the reason only.
            session.on("detached", lambda *a, p=pid: self.on_detached(p, str(a[0]) if a else ""))
            injected = time.monotonic()
            script = session.create_script(self.source, name="mic_reads")
            script.on("message", lambda m, d, *_, p=pid: self.on_message(p, m, d))
            script.load()
        except frida.ProcessNotFoundError:
            self.given_up.add(pid)  # a short-lived process, gone before we got to it
            self.event("trace_skip", pid=pid, comm=comm, reason="process exited")
            return False
        except FRIDA_ERRORS as exc:
            self.given_up.add(pid)
            self.event(
                "trace_error",
                pid=pid,
                comm=comm,
                role=role,
                error=f"{type(exc).__name__}: {exc}",
            )
            log.warning("attach to %d (%s) failed: %s: %s", pid, comm, type(exc).__name__, exc)
            return False
        with self.lock:
            self.sessions[pid] = (session, script)
        took = round(time.monotonic() - started, 3)
        settle = round(settled - started, 3)  # of took_s: waiting for the main thread to sleep
        # of took_s: the agent compiled and started (its hooks installed), after the injection
        script_s = round(time.monotonic() - injected, 3)
        # main_asleep false: attached while the main thread was busy (the risk described above)
        self.event(
            "trace_attach",
            pid=pid,
            comm=comm,
            role=role,
            took_s=took,
            settle_s=settle,
            script_s=script_s,
            main_asleep=asleep,
        )
        return True

    def attach_new(self) -> list[Future[bool]]:
        """Start attaching, in parallel, to every process of the tree not seen yet; the
        attaches, queued on the pool, are returned (the poll does not wait for them: a poll
        blocked behind one batch's injections left the processes that appeared meanwhile
        unseen for a second)."""
        tree = descendants(self.roots, children_map())
        skipped = []
        new = []
        # One lock from choosing to marking pending: the poll thread and the start both call
        # this, and neither may attach a process the other has chosen.
        with self.lock:
            for pid in sorted(tree - set(self.sessions) - self.given_up - self.pending):
                # Injecting into a process in its first moments (just forked from a zygote, or
                # mid-exec) can crash Frida's loader and the process with it: wait until it
                # settles.
                if (_age_s(pid) or 0.0) < self.min_age_s:
                    continue
                excluded = self.excluded_by(pid)
                if excluded:
                    self.given_up.add(pid)
                    skipped.append((pid, excluded))
                else:
                    new.append(pid)
            self.pending.update(new)
        for pid, excluded in skipped:
            self.event("trace_skip", pid=pid, comm=_comm(pid), reason=f"excluded: {excluded}")
        if skipped and self.status is not None:
            self.write_status()
        return [self.pool.submit(self.attach_and_publish, pid) for pid in new]

    def attach_and_publish(self, pid: int) -> bool:
        """Attach, then publish the coverage, before the attach's future is done: whoever
        waits on the future then finds the status written (a done-callback runs after the
        waiters are woken: a CI run read the status before it)."""
        try:
            return self.attach(pid)
        finally:
            with self.lock:
                self.pending.discard(pid)
            if self.status is not None:
                self.write_status()

    def excluded_by(self, pid: int) -> str | None:
        """The driver's skip pattern found in the process's command line, if any."""
        if pid in self.roots or not self.skip:
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return None
        return next((pattern for pattern in self.skip if pattern in cmdline), None)

    def write_status(self) -> None:
        """Publish which PIDs are covered, so the runner can wait until the tree is traced.
        The poll thread and the start both publish: one at a time, through one file."""
        with self.status_lock:
            with self.lock:
                covered = sorted(set(self.sessions) | self.given_up)
            tmp = self.status.with_suffix(".tmp")
            tmp.write_text(json.dumps({"covered": covered}))
            tmp.replace(self.status)

    def on_detached(self, pid: int, reason: str) -> None:
        if not self.stopping.is_set():
            self.event("trace_detach", pid=pid, reason=reason)

    def run(self, poll_s: float = 0.05) -> int:
        """Attach to the tree until asked to stop; return the exit status.

        "ready" is announced once the roots are attached. Polling runs in a background
        thread from the start, so the processes a client starts meanwhile are attached beside
        its root, and a stop is honoured even while an attach is in progress (the runner
        waits on ``--status`` for the whole tree).
        """
        for root in self.roots:
            # a process younger than min_age_s can crash Frida's loader; an age of 0.0 is
            # young, not unknown (only None means the process is gone)
            while (age := _age_s(root)) is not None and age < self.min_age_s:
                time.sleep(0.02)
        # The roots and the processes already below them are attached side by side: each
        # attach waits for its own process to settle, then injects (about a second for a
        # Chromium process), and one after the other they were most of a session's set-up.
        with self.lock:
            self.pending.update(self.roots)
        roots = [self.pool.submit(self.attach, root) for root in self.roots]

        def poll() -> None:
            while not self.stopping.wait(poll_s):
                try:
                    self.attach_new()
                except Exception:  # a poll thread that died would leave new processes unseen
                    log.exception("polling the process tree failed; polling on")
                with self.lock:
                    self.out.flush()

        threading.Thread(target=poll, name="poll", daemon=True).start()
        for root, attached in zip(self.roots, roots, strict=True):
            if not attached.result():
                log.error("cannot attach to root process %d", root)
                self.stopping.set()
                return 2
        with self.lock:
            self.pending.difference_update(self.roots)
        wait(self.attach_new())  # whatever the poll has not chosen yet
        if self.status is not None:
            self.write_status()
        print(json.dumps({"ready": sorted(self.sessions)}), flush=True)
        self.stopping.wait()
        self.pool.shutdown(wait=False, cancel_futures=True)
        return 0 if self.finish() else 3

    def finish(self, timeout: float = 6.0, close_timeout: float = 0.5) -> bool:
        """Drain every agent's buffer, detach, close the files; False if some agent hung.

        The session runner allows 10 s from its SIGTERM to our exit, so every step here is
        bounded: ``timeout`` for the drains, ``close_timeout`` for Frida's device manager.
        """
        with self.lock:
            sessions = list(self.sessions.items())
        log.info("stopping: draining %d agent(s)", len(sessions))

        def drain(pid: int, session: frida.core.Session, script: frida.core.Script) -> None:
            try:
                rows = script.exports_sync.flush()
                if rows:
                    self.write_reads(pid, rows)
                script.unload()
                session.detach()
            except FRIDA_ERRORS:
                pass  # the process has gone; its reads up to the last flush are written

        workers = [
            threading.Thread(target=drain, args=(pid, se, sc), daemon=True)
            for pid, (se, sc) in sessions
        ]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        stuck = [pid for (pid, _), w in zip(sessions, workers, strict=True) if w.is_alive()]
        if stuck:
            log.error("agents in %s did not drain within %.0f s", stuck, timeout)
        elif not _close_device_manager(close_timeout):
            # Every read is drained by now: waiting on a hung close would have the runner kill
            # us and fail the session for nothing (a suspected cause of "tracer was killed on
            # stop", about once in 50 sessions under load). The helper it would have ended is
            # left in the session's namespace, which the runner empties and deletes. It closes
            # in about 50 ms, or hangs: waiting 2 s for it was seen to add 2 s to a session.
            log.warning("Frida's device manager did not close within %.1f s", close_timeout)
            self.event("trace_close_timeout", timeout_s=close_timeout)
        with self.lock:
            self.out.close()
            self.events.close()
        log.info("tracer wrote %d reads from %d process(es)", self.reads, len(sessions))
        return not stuck


def _close_device_manager(timeout: float) -> bool:
    """Close Frida's device manager, which ends its injection helper (else it lingers after we
    exit); False if that did not finish within ``timeout`` s (it is left to the exit)."""
    closer = threading.Thread(
        target=lambda: frida.get_device_manager().close(), name="close", daemon=True
    )
    closer.start()
    closer.join(timeout)
    return not closer.is_alive()


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reallymuted.testbed.tracing")
    parser.add_argument("--root", type=int, action="append", required=True)
    parser.add_argument("--t0", type=float, required=True, help="session t0, CLOCK_MONOTONIC s")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument("--status", type=Path, help="JSON file listing the PIDs covered so far")
    parser.add_argument("--poll", type=float, default=0.05, help="process-tree poll interval, s")
    parser.add_argument("--min-age", type=float, default=0.5, help="attach processes this old, s")
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=10.0,
        help="wait this long at most for a process's main thread to sleep in system calls "
        "through --settle before attaching, s",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.3,
        help="how long a main thread must have slept in system calls to be attached, s",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        help="do not trace processes whose command line "
        "contains this (the driver's list of processes that cannot touch audio devices)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s tracer: %(message)s")
    tracer = TreeTracer(
        args.root,
        args.t0,
        args.out,
        args.events,
        args.status,
        min_age_s=args.min_age,
        skip=tuple(args.skip),
        idle_wait_s=args.idle_wait,
        settle_s=args.settle,
    )

    def _stop(_signum: int, _frame: object) -> None:
        tracer.stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return tracer.run(args.poll)


if __name__ == "__main__":
    status = _main()
    logging.shutdown()
    # Frida's own threads may still be blocked on a hung process: do not wait for them.
    os._exit(status)
