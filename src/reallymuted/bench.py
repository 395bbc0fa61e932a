"""Benchmarks (``make bench``): wall time and memory of the study's parts, against targets.

Timings are measured here, never asserted in unit tests. Each benchmark writes one JSON file
under the output directory with what was measured, the target and whether it was met.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reallymuted.io import write_json

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]


@dataclass
class TreeSampler:
    """Samples the summed resident memory of a process and all its descendants."""

    root_pid: int
    interval_s: float = 0.1
    peak_bytes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _tree_rss(self) -> int:
        children: dict[int, list[int]] = {}
        rss: dict[int, int] = {}
        page = os.sysconf("SC_PAGE_SIZE")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                statm = (entry / "statm").read_text().split()
            except OSError:
                continue  # the process ended while we looked
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
            rss[int(entry.name)] = int(statm[1]) * page
        total, todo = 0, [self.root_pid]
        while todo:
            pid = todo.pop()
            total += rss.get(pid, 0)
            todo += children.get(pid, [])
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


def measure_command(command: list[str], cwd: Path) -> dict[str, Any]:
    """Run a command; return wall time, peak tree RSS and the largest single process's RSS."""
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with TreeSampler(process.pid) as sampler:
        output, _ = process.communicate()
    wall = time.monotonic() - start
    largest_child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "command": " ".join(command),
        "exit_status": process.returncode,
        "wall_s": round(wall, 2),
        "peak_tree_rss_mb": round(sampler.peak_bytes / 2**20, 1),
        "largest_process_rss_mb": round(largest_child_kb / 1024, 1),
        "output_tail": output.decode(errors="replace")[-2000:],
    }


def snakemake_command(workdir: Path, cores: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "-c",
        str(cores),
        *extra,
    ]


def bench_reference_study(out_dir: Path, cores: int = 2) -> dict[str, Any]:
    """The reference part of the default study, from nothing, in a scratch directory."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["stages"] = {name: name == "reference" for name in config["stages"]}
    with tempfile.TemporaryDirectory(prefix="reallymuted-bench-") as scratch:
        workdir = Path(scratch)
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        result = measure_command(snakemake_command(workdir, cores), workdir)
    target_s = 180
    result.update(
        {
            "benchmark": "reference_study",
            "what": "user study, telemetry, classifier (all windows, models), claims; from scratch",
            "cores": cores,
            "target": f"wall time under {target_s} s on {cores} cores",
            "met": result["exit_status"] == 0 and result["wall_s"] < target_s,
        }
    )
    write_json(out_dir / "reference_study.json", result)
    return result


BENCHMARKS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "reference_study": bench_reference_study,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    failed = []
    for name in args.only or sorted(BENCHMARKS):
        log.info("benchmark %s …", name)
        result = BENCHMARKS[name](args.out)
        shown = {k: v for k, v in result.items() if k not in ("output_tail", "command")}
        log.info("%s: %s", name, shown)
        if not result["met"]:
            failed.append(name)
    if failed:
        log.warning("targets not met: %s (see %s)", ", ".join(failed), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
