"""The audited app's parent: runs it as the desktop's user and keeps every process it makes.

``reallymuted audit`` starts ``python -m reallymuted.testbed.reaper --uid U --gid G --events F
-- COMMAND...`` as root inside the audit's network namespace. It makes itself a child
subreaper (``PR_SET_CHILD_SUBREAPER``), so a process the app forks away (a launcher that starts
the real client and exits, a daemonised helper) is re-parented to it instead of to init and
stays inside the tree the tracer and the sound-server witness follow; then it starts COMMAND
with the user's uid, gid and groups. It reaps every descendant and writes a line per exit to
``F`` (JSON lines, CLOCK_MONOTONIC ``monotonic``): ``app_exit`` for COMMAND itself,
``orphan_exit`` for the others, so the audit can say what happened (the app crashed, the
launcher exited and its child carried on). It exits once it has no child left, with COMMAND's
status (128 + signal for a signal).

On SIGTERM or SIGINT it stops the whole tree, by PID: SIGTERM to every descendant, then SIGKILL
to those still alive after ``--grace`` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (read from /proc, children before grandchildren)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, frontier = [], [pid]
    while frontier:
        frontier = [c for p in frontier for c in children.get(p, [])]
        found += frontier
    return found


def exit_status(status: int) -> dict[str, object]:
    """A wait status as the events file says it (code, or signal name)."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        return {"signal": signal.Signals(number).name, "returncode": 128 + number}
    return {"returncode": os.WEXITSTATUS(status)}


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reallymuted.testbed.reaper")
    parser.add_argument("--uid", type=int, required=True)
    parser.add_argument("--gid", type=int, required=True)
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("reaper: prctl(PR_SET_CHILD_SUBREAPER) failed", file=sys.stderr)
        return 1
    events = args.events.open("a", buffering=1)

    def note(event: str, **fields: object) -> None:
        events.write(json.dumps({"monotonic": time.monotonic(), "event": event, **fields}) + "\n")

    stopping: list[str] = []

    def _stop(signum: int, _frame: object) -> None:
        stopping.append(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        name = pwd.getpwuid(args.uid).pw_name
        groups = os.getgrouplist(name, args.gid)
    except KeyError:
        groups = [args.gid]
    try:
        app = subprocess.Popen(command, user=args.uid, group=args.gid, extra_groups=groups)
    except OSError as exc:
        note("app_start_failed", error=f"{type(exc).__name__}: {exc}")
        print(f"reaper: cannot start {command[0]}: {exc}", file=sys.stderr)
        return 127
    note("app_start", pid=app.pid, argv=command, uid=args.uid, gid=args.gid)
    app_status: int | None = None
    deadline: float | None = None
    while True:
        if stopping and deadline is None:
            note("stop_requested", signal=stopping[0], pids=descendants(os.getpid()))
            for pid in descendants(os.getpid()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + args.grace
        if deadline is not None and time.monotonic() > deadline:
            left = descendants(os.getpid())
            if left:
                note("killed", pids=left)
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)
            continue
        kind = "app_exit" if pid == app.pid else "orphan_exit"
        if pid == app.pid:
            app_status = status
            app.returncode = exit_status(status)["returncode"]  # type: ignore[assignment]
        note(kind, pid=pid, **exit_status(status), left=descendants(os.getpid()))
    note("reaper_exit")
    events.close()
    if app_status is None:
        return 1
    return int(exit_status(app_status)["returncode"])  # type: ignore[call-overload]


if __name__ == "__main__":
    sys.exit(_main())
