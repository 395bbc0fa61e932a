"""What the benchmarks share: measuring a command's wall time and memory, running the
workflow in a scratch directory, and the code of the baseline revision.

Every benchmark writes one JSON file with ``baseline`` (measured in the same run: the same
work by the baseline revision's code, or by the tool it is set against), ``measured``,
``ratio`` (how many times faster than the baseline: baseline time / measured time, or
measured throughput / baseline throughput), ``target`` and ``met``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reallymuted.testbed import netns

log = logging.getLogger("reallymuted.bench")
REPO = Path(__file__).resolve().parents[3]
# The study before the performance work (issue 14): the baselines run this revision's code.
BASELINE_REV = "ac88a94"


@dataclass
class TreeSampler:
    """Samples the summed resident memory of a process and all its descendants."""

    root_pid: int
    interval_s: float = 0.1
    peak_bytes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _tree_rss(self) -> int:
        page = os.sysconf("SC_PAGE_SIZE")
        total = 0
        for pid in netns.descendants([self.root_pid]):
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
            except OSError:
                continue  # the process ended while we looked
        return total

    def run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, self._tree_rss())

    def __enter__(self) -> TreeSampler:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure_command(
    command: list[str], cwd: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run a command; return wall time (and its epoch start and end), peak tree RSS and the
    largest single process's RSS."""
    started_epoch, start = time.time(), time.monotonic()
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    with TreeSampler(process.pid) as sampler:
        output, _ = process.communicate()
    wall = time.monotonic() - start
    largest_child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "command": " ".join(command),
        "exit_status": process.returncode,
        "wall_s": round(wall, 2),
        "started_epoch": round(started_epoch, 3),
        "ended_epoch": round(started_epoch + wall, 3),
        "peak_tree_rss_mb": round(sampler.peak_bytes / 2**20, 1),
        "largest_process_rss_mb": round(largest_child_kb / 1024, 1),
        "output_tail": output.decode(errors="replace")[-2000:],
    }


def snakemake_command(workdir: Path, cores: int, *extra: str, code: Path = REPO) -> list[str]:
    """The workflow of ``code`` (this checkout, or a baseline's) run in ``workdir``."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(code / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "-c",
        str(cores),
        *extra,
    ]


@contextlib.contextmanager
def baseline_checkout(rev: str = BASELINE_REV) -> Iterator[Path]:
    """A worktree of the repository at ``rev`` (removed afterwards). The vendors' libraries
    are built at set-up and never committed: the worktree uses this checkout's build."""
    with tempfile.TemporaryDirectory(prefix="reallymuted-baseline-") as scratch:
        tree = Path(scratch) / "repo"
        git = ["git", "-C", str(REPO)]
        subprocess.run(
            [*git, "worktree", "add", "--detach", str(tree), rev], check=True, capture_output=True
        )
        try:
            for built in ("envs/sdk/dist", "envs/sdk/node_modules"):
                if (REPO / built).exists() and not (tree / built).exists():
                    (tree / built).symlink_to(REPO / built)
            # the authors' data beside it, where config.yaml's reference.dir expects it
            shared = REPO.parent / "shared"
            if shared.is_dir():
                (tree.parent / "shared").symlink_to(shared)
            yield tree
        finally:
            subprocess.run(
                [*git, "worktree", "remove", "--force", str(tree)], check=False, capture_output=True
            )


def code_env(code: Path) -> dict[str, str]:
    """The environment that runs ``code``'s package rather than the installed one."""
    return dict(os.environ, PYTHONPATH=str(code / "src"))
