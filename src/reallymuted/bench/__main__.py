"""``python -m reallymuted.bench``: run the benchmarks (``make bench``), one JSON file each
under ``--out``, and a table of baseline, measured, ratio and target at the end."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reallymuted.bench.common import log
from reallymuted.bench.extraction import bench_extraction
from reallymuted.bench.guard import bench_guard_latency
from reallymuted.bench.sessions import (
    bench_session_overhead,
    bench_tracer_attach,
    bench_tracer_cost,
)
from reallymuted.bench.study import (
    bench_planning_scale,
    bench_reference_study,
    bench_study_parallel,
)

# In the order run: the quick ones first.
BENCHMARKS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "extraction_throughput": bench_extraction,
    "planning_scale": bench_planning_scale,
    "reference_study": bench_reference_study,
    "session_overhead": bench_session_overhead,
    "tracer_cost": bench_tracer_cost,
    "study_parallel": bench_study_parallel,
    "guard_latency": bench_guard_latency,
    "tracer_attach": bench_tracer_attach,
}
# 200 Chromium starts under load (about 15 min): a reliability count, run on request
# (--only tracer_attach, or --all).
ON_REQUEST = ("tracer_attach",)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--only", choices=list(BENCHMARKS), action="append")
    parser.add_argument("--all", action="store_true", help="also " + ", ".join(ON_REQUEST))
    parser.add_argument(
        "--keep-runs",
        type=Path,
        metavar="DIR",
        help="study_parallel keeps its study folders under DIR instead of deleting them",
    )
    parser.add_argument(
        "--also-at-once",
        type=int,
        action="append",
        metavar="N",
        help="study_parallel also runs the study N sessions at a time, besides config.yaml's "
        "(default: 2)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    chosen = args.only or [n for n in BENCHMARKS if args.all or n not in ON_REQUEST]
    results = {}
    for name in chosen:
        log.info("benchmark %s …", name)
        if name == "study_parallel":
            results[name] = bench_study_parallel(
                args.out, keep_runs=args.keep_runs, also_at_once=tuple(args.also_at_once or [2])
            )
        else:
            results[name] = BENCHMARKS[name](args.out)
    log.info(
        "\n%-22s %12s %12s %7s %5s  target", "benchmark", "baseline", "measured", "ratio", "met"
    )
    for name, result in results.items():
        log.info(
            "%-22s %12s %12s %7s %5s  %s",
            name,
            result.get("baseline", "-"),
            result.get("measured", "-"),
            result.get("ratio", "-"),
            result["met"],
            result["target"],
        )
    failed = [name for name, result in results.items() if not result["met"]]
    if failed:
        log.warning("targets not met: %s (see %s)", ", ".join(failed), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
