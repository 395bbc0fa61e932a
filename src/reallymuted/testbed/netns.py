"""The session's private network namespace, and the processes a session starts.

A session runs every program it starts inside one named network namespace that has only a
loopback interface, so the capture holds only this session's traffic and nothing leaves the
machine. Every process is started in its own process group and recorded (PID, process group,
start time) in a registry file, so whoever cleans up — the runner itself, or the supervisor
after the runner died — stops exactly the processes the session started and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from reallymuted.tshark_ports import TCP_CLAIMING_PORTS, UDP_CLAIMING_PORTS

log = logging.getLogger(__name__)

PREFIX = "reallymuted-"
RESERVED_PORTS = "/proc/sys/net/ipv4/ip_local_reserved_ports"


class EnvironmentProblem(RuntimeError):
    """The machine cannot run a testbed session (not root, no `ip netns`, a missing program)."""


def preflight(programs: Iterable[str] = ()) -> None:
    """Fail early, with a message that says what to do, if sessions cannot run here."""
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "testbed sessions need root (network namespaces, packet capture, ptrace); "
            "run snakemake as root, or set `stages: {sessions: false}` in the config"
        )
    if shutil.which("ip") is None:
        raise EnvironmentProblem("`ip` (iproute2) is not installed; run `make setup`")
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        raise EnvironmentProblem(f"`ip netns` is unavailable: {probe.stderr.strip()}")
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        raise EnvironmentProblem(f"missing program(s): {', '.join(missing)}; run `make setup`")


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def names() -> list[str]:
    """Names of the existing named network namespaces."""
    out = _ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def create(name: str) -> None:
    """Create the namespace with its loopback interface up (and nothing else), and the
    ephemeral ports tshark would misname reserved."""
    result = _ip("netns", "add", name)
    if result.returncode != 0:
        raise EnvironmentProblem(f"ip netns add {name}: {result.stderr.strip()}")
    result = _ip("-n", name, "link", "set", "lo", "up")
    if result.returncode != 0:
        _ip("netns", "del", name)
        raise EnvironmentProblem(f"ip -n {name} link set lo up: {result.stderr.strip()}")
    # No client here is given a port on which tshark names whatever is sent after another
    # protocol: its RTP or HTTP would go uncounted (reallymuted.tshark_ports).
    reserved = ",".join(map(str, sorted({*TCP_CLAIMING_PORTS, *UDP_CLAIMING_PORTS})))
    write = f"echo {reserved} > {RESERVED_PORTS}"  # the namespace's own copy of the setting
    result = subprocess.run(
        [*exec_prefix(name), "sh", "-c", write], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        _ip("netns", "del", name)
        raise EnvironmentProblem(f"reserving ports in {name}: {result.stderr.strip()}")


def pids(name: str) -> list[int]:
    """PIDs of every process whose network namespace is ``name``."""
    out = _ip("netns", "pids", name).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def exec_prefix(name: str) -> list[str]:
    """Command prefix that runs a program inside the namespace."""
    return ["ip", "netns", "exec", name]


def destroy(name: str, timeout: float = 5.0) -> list[int]:
    """Kill whatever still runs in the namespace, then delete it; return the PIDs killed.

    Only this session's programs can be in a namespace this session created, so killing
    every PID in it is stopping what we started, by PID.
    """
    if name not in names():
        return []
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids(name) if p != os.getpid()]
        if not left:
            break
        for pid in left:
            comm = _comm(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                log.warning("killed pid %d (%s) left in namespace %s", pid, comm, name)
        if time.monotonic() > deadline:
            log.error("processes still in namespace %s after SIGKILL: %s", name, left)
            break
        time.sleep(0.05)
    result = _ip("netns", "del", name)
    if result.returncode != 0:
        log.error("ip netns del %s: %s", name, result.stderr.strip())
    return sorted(set(killed))


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def remove_stale(prefix: str = PREFIX) -> list[str]:
    """Delete empty namespaces left by a supervisor that died (its PID is in the name)."""
    removed = []
    for name in names():
        if not name.startswith(prefix):
            continue
        owner = name[len(prefix) :].split("-")[0]
        if owner.isdigit() and Path(f"/proc/{owner}").exists():
            continue  # a live session, possibly another one
        if pids(name):
            log.warning("stale namespace %s still has processes; left alone", name)
            continue
        if _ip("netns", "del", name).returncode == 0:
            removed.append(name)
    return removed


# --- processes -------------------------------------------------------------------------


def proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(parent PID, process group, start time in clock ticks) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = text[text.rindex(")") + 2 :].split()
    if rest[0] == "Z":  # a zombie holds no resources and cannot be killed further
        return None
    return int(rest[1]), int(rest[2]), int(rest[19])


def alive(pid: int, starttime: int | None = None) -> bool:
    """Whether ``pid`` is running and, if given, is the same process (not a reused PID)."""
    stat = proc_stat(pid)
    return stat is not None and (starttime is None or stat[2] == starttime)


def children_map() -> dict[int, list[int]]:
    """Parent PID -> child PIDs of every live process (one scan of /proc)."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat is not None:
                tree.setdefault(stat[0], []).append(int(entry.name))
    return tree


def descendants(roots: Iterable[int], tree: Mapping[int, list[int]] | None = None) -> set[int]:
    """The roots and every process below them."""
    tree = children_map() if tree is None else tree
    seen: set[int] = set()
    stack = [r for r in roots if alive(r)]
    while stack:
        pid = stack.pop()
        if pid not in seen:
            seen.add(pid)
            stack.extend(tree.get(pid, []))
    return seen


def tree_cpu_s(roots: Iterable[int]) -> float:
    """CPU seconds (user + system) used so far by the roots and every process below them.

    Children that already exited and were waited for are included through their parent's
    cutime/cstime.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in descendants(roots):
        try:
            rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        total += sum(int(x) for x in rest[11:15])  # utime, stime, cutime, cstime
    return total / ticks


def group_members(pgid: int, not_before: int) -> list[int]:
    """Live processes of process group ``pgid`` started no earlier than ``not_before``."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat is not None and stat[1] == pgid and stat[2] >= not_before:
                members.append(int(entry.name))
    return members


@dataclass
class Managed:
    """One process the session started, in its own process group."""

    role: str
    popen: subprocess.Popen[Any]
    starttime: int
    stop_signal: int = signal.SIGTERM
    essential: bool = True  # its early death fails the session
    stopping: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def returncode(self) -> int | None:
        return self.popen.poll()


@dataclass
class ProcessSet:
    """Every process a session starts, so each can be checked and stopped by PID.

    ``registry`` (JSON lines) lets another process (the supervisor) stop them if this one
    dies before it could.
    """

    registry: Path | None = None
    procs: list[Managed] = field(default_factory=list)

    def start(
        self,
        role: str,
        argv: list[str],
        *,
        output: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        stop_signal: int = signal.SIGTERM,
        essential: bool = True,
        text: bool = False,
    ) -> Managed:
        """Start ``argv`` in its own process group; ``output`` collects whatever stdout/stderr
        are not given (otherwise they are discarded)."""
        with contextlib.ExitStack() as stack:
            sink: int | IO[Any] = subprocess.DEVNULL
            if output is not None:
                sink = stack.enter_context(output.open("ab"))
            popen = subprocess.Popen(
                argv,
                env=dict(env) if env is not None else None,
                stdin=stdin,
                stdout=sink if stdout is None else stdout,
                stderr=sink if stderr is None else stderr,
                start_new_session=True,  # own process group: stopped without touching others
                text=text,
            )
        stat = proc_stat(popen.pid)
        managed = Managed(role, popen, stat[2] if stat else 0, stop_signal, essential)
        self.procs.append(managed)
        if self.registry is not None:
            entry = {"role": role, "pid": popen.pid, "starttime": managed.starttime, "argv": argv}
            with self.registry.open("a") as fh:
                fh.write(json.dumps(entry) + "\n")
        log.info("started %s (pid %d): %s", role, popen.pid, " ".join(argv)[:300])
        return managed

    def get(self, role: str) -> Managed | None:
        for managed in reversed(self.procs):
            if managed.role == role:
                return managed
        return None

    def dead(self) -> list[Managed]:
        """Essential processes that exited without being asked to."""
        return [
            m for m in self.procs if m.essential and not m.stopping and m.returncode() is not None
        ]

    def stop(self, managed: Managed, timeout: float = 5.0) -> int | None:
        """Ask the process to stop with its stop signal, then SIGKILL its group; return rc."""
        managed.stopping = True
        if managed.returncode() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(managed.pid, managed.stop_signal)
            try:
                managed.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s (pid %d) ignored signal %d; killing",
                    managed.role,
                    managed.pid,
                    managed.stop_signal,
                )
        kill_group(managed.pid, managed.starttime)
        with contextlib.suppress(subprocess.TimeoutExpired):
            managed.popen.wait(2.0)
        return managed.returncode()

    def stop_all(self, timeout: float = 3.0) -> None:
        """Stop everything still running, newest first."""
        for managed in reversed(self.procs):
            self.stop(managed, timeout)


def kill_group(pgid: int, not_before: int) -> list[int]:
    """SIGKILL every member of a process group we created (the leader's PID is its id)."""
    killed = []
    for pid in group_members(pgid, not_before):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def same_namespace_strays(known: Iterable[int], timeout: float = 2.0) -> list[dict[str, Any]]:
    """Stop processes in *our* network namespace that we did not start ourselves.

    Tools start helpers of their own (Frida's injection helper daemonises and outlives the
    tracer). Inside a session's private namespace such a process can only belong to the
    session, so it is stopped here, by PID: SIGTERM, then SIGKILL.
    """
    own = Path("/proc/self/ns/net").stat().st_ino
    skip = {os.getpid(), *known}
    strays = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            if Path(f"/proc/{entry.name}/ns/net").stat().st_ino != own:
                continue
        except OSError:
            continue
        if proc_stat(int(entry.name)) is not None:
            strays.append({"pid": int(entry.name), "comm": _comm(int(entry.name))})
    for stray in strays:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stray["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(s["pid"]) for s in strays) and time.monotonic() < deadline:
        time.sleep(0.02)
    for stray in strays:
        if alive(stray["pid"]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(stray["pid"], signal.SIGKILL)
    return strays


def reap_registry(registry: Path) -> list[int]:
    """Kill every recorded process (and its group) that still runs; return the PIDs killed."""
    if not registry.exists():
        return []
    killed = []
    for line in registry.read_text().splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        pid, starttime = int(entry["pid"]), int(entry["starttime"])
        if alive(pid, starttime):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        killed += kill_group(pid, starttime)
    return sorted(set(killed))
