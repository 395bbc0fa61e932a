"""Benchmarks (``make bench``): wall time and memory of the study's parts, and how often the
tracer fails to attach, against targets.

Timings are measured here, never asserted in unit tests. Each benchmark writes one JSON file
under the output directory with what was measured, the target and whether it was met.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import select
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
from reallymuted.testbed import netns

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


# -- testbed sessions ---------------------------------------------------------------------

BENCH_CLIENTS = {  # app id -> (driver, mode, options): one per kind of client
    "control-continuous": ("control", "ctrl", {"policy": "continuous"}),
    "baresip-opus": ("baresip", "ctrl", {"codec": "opus"}),
    "chromium": ("chromium", "soft", {}),
}


def _bench_session(
    app: str, stimulus: Path, out: Path, trace_app: bool = True, seconds: float = 5.0
) -> dict[str, Any]:
    from reallymuted.testbed.spec import SessionSpec
    from reallymuted.testbed.supervisor import run_session

    driver, mode, options = BENCH_CLIENTS[app]
    spec = SessionSpec(
        app=app,
        driver=driver,
        mode=mode,
        stimulus="tone",
        stimulus_path=str(stimulus),
        rep=1,
        schedule=[{"state": "unmuted", "seconds": seconds}, {"state": "muted", "seconds": seconds}],
        options=options,
        trace_app=trace_app,
    )
    manifest = run_session(spec, out)
    if manifest["status"] != "ok":
        raise RuntimeError(f"benchmark session {app} failed: {manifest['failure']}")
    return manifest


def bench_session_overhead(out_dir: Path, repeats: int = 2) -> dict[str, Any]:
    """Wall time of a session beyond its schedule: setting up and tearing down the instrument."""
    from reallymuted.testbed.stimuli import make_stimulus

    rows = []
    with tempfile.TemporaryDirectory(prefix="reallymuted-bench-") as scratch:
        stimulus = Path(scratch) / "tone.wav"
        make_stimulus({"kind": "tone", "seconds": 2}, stimulus)
        for app in BENCH_CLIENTS:
            for rep in range(repeats):
                m = _bench_session(app, stimulus, Path(scratch) / f"{app}-{rep}")
                waits = m["schedule"]["lead_s"] + m["schedule"]["tail_s"]
                total = m["supervisor"]["overhead_s"]
                rows.append(
                    {
                        "app": app,
                        "overhead_s": total,
                        "configured_waits_s": waits,
                        "setup_teardown_s": round(total - waits, 3),
                    }
                )
    worst = max(r["setup_teardown_s"] for r in rows)
    result = {
        "benchmark": "session_overhead",
        "what": "session wall time minus the mute schedule (join to leave), per client; "
        "setup_teardown_s also leaves out the configured lead and tail waits",
        "sessions": rows,
        "max_setup_teardown_s": worst,
        "max_overhead_s": max(r["overhead_s"] for r in rows),
        "target": "setup + teardown under 5 s per session",
        "met": worst < 5.0,
    }
    write_json(out_dir / "session_overhead.json", result)
    return result


def synthetic_rtp_pcap(path: Path, packets: int) -> None:
    """A pcap of RTP packets with an RFC 6464 level extension (for parser throughput only)."""
    import struct

    import dpkt

    with path.open("wb") as fh:
        writer = dpkt.pcap.Writer(fh, linktype=dpkt.pcap.DLT_EN10MB)
        for seq in range(packets):
            header = struct.pack("!BBHII", 0x90, 111, seq & 0xFFFF, seq * 960, 0xCAFE)
            rtp = header + struct.pack("!HHB", 0xBEDE, 1, 0x10) + bytes([0x80 | 40, 0, 0])
            udp = dpkt.udp.UDP(sport=40000, dport=40002, data=rtp + bytes(60))
            udp.ulen = len(udp)
            ip = dpkt.ip.IP(src=b"\x7f\x00\x00\x01", dst=b"\x7f\x00\x00\x01", p=17, data=udp)
            ip.len = len(ip)
            eth = dpkt.ethernet.Ethernet(data=ip, type=dpkt.ethernet.ETH_TYPE_IP)
            writer.writepkt(bytes(eth), ts=1_700_000_000 + seq * 0.02)


def bench_extraction(out_dir: Path, packets: int = 100_000, repeats: int = 3) -> dict[str, Any]:
    """Packets per second of the extraction against plain ``tshark -T fields`` (same fields)."""
    from reallymuted.analysis import extract

    with tempfile.TemporaryDirectory(prefix="reallymuted-bench-") as scratch:
        pcap = Path(scratch) / "rtp.pcap"
        synthetic_rtp_pcap(pcap, packets)
        plain, ours = [], []
        for _ in range(repeats):
            start = time.monotonic()
            with Path(os.devnull).open("wb") as sink:
                subprocess.run(extract.tshark_command(pcap), stdout=sink, check=True)
            plain.append(time.monotonic() - start)
            start = time.monotonic()
            table = extract.read_packets(pcap, start_epoch=1_700_000_000, client_ports={40000})
            ours.append(time.monotonic() - start)
        assert len(table) == packets
    ratio = min(ours) / min(plain)
    result = {
        "benchmark": "extraction_throughput",
        "what": f"{packets} RTP packets: extract.read_packets (tshark fields + parsing into a "
        "table) against the same tshark command writing to /dev/null; best of "
        f"{repeats}",
        "packets": packets,
        "tshark_fields_pkt_per_s": round(packets / min(plain)),
        "extraction_pkt_per_s": round(packets / min(ours)),
        "time_ratio": round(ratio, 3),
        "target": "extraction within 1.5x the time of plain tshark -T fields",
        "met": ratio <= 1.5,
    }
    write_json(out_dir / "extraction_throughput.json", result)
    return result


def bench_tracer_cost(out_dir: Path) -> dict[str, Any]:
    """The client's CPU time from join to leave, with and without the Frida tracer."""
    from reallymuted.testbed.stimuli import make_stimulus

    rows = []
    with tempfile.TemporaryDirectory(prefix="reallymuted-bench-") as scratch:
        stimulus = Path(scratch) / "tone.wav"
        make_stimulus({"kind": "tone", "seconds": 2}, stimulus)
        for app in ("control-continuous", "chromium"):
            cpu = {}
            reads = 0
            for traced in (False, True):
                m = _bench_session(app, stimulus, Path(scratch) / f"{app}-{traced}", traced, 10.0)
                cpu[traced] = m["client_cpu_s"]
                if traced:
                    reads = sum(
                        n for api, n in m["counts"]["mic_trace"].items() if api[:3] != "os:"
                    )
            rows.append(
                {
                    "app": app,
                    "client_cpu_s_untraced": cpu[False],
                    "client_cpu_s_traced": cpu[True],
                    "schedule_s": 20.0,
                    "added_cpu_share_of_one_core": round((cpu[True] - cpu[False]) / 20.0, 4),
                    "intercepted_reads": reads,
                    "added_cpu_ms_per_read": round(1000 * (cpu[True] - cpu[False]) / reads, 3)
                    if reads
                    else None,
                }
            )
    result = {
        "benchmark": "tracer_cost",
        "what": "client CPU time (user+system, whole process tree) from join to leave of a 20 s "
        "schedule, traced vs untraced; one run each, so expect noise of a few tens of ms",
        "clients": rows,
        "target": "reported (no target set)",
        "met": True,
    }
    write_json(out_dir / "tracer_cost.json", result)
    return result


def _attach_once(scratch: Path, port: int, tracer_flags: list[str]) -> dict[str, Any]:
    """Start Chromium as the driver does, run the session's tracer on it, stop both."""
    from reallymuted.testbed.drivers import wait_for_exec
    from reallymuted.testbed.drivers.chromium import BINARY, FLAGS, ChromiumDriver

    scratch.mkdir()
    env = dict(os.environ, HOME=str(scratch), TMPDIR=str(scratch))
    argv = [BINARY, *FLAGS, f"--user-data-dir={scratch}/profile"]
    argv += [f"--remote-debugging-port={port}", "about:blank"]
    browser = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    tracer = None
    try:
        wait_for_exec(browser.pid, "chromium", timeout=10.0)
        tracer_argv = [
            sys.executable,
            "-m",
            "reallymuted.testbed.tracing",
            "--root",
            str(browser.pid),
        ]
        tracer_argv += ["--t0", repr(time.monotonic()), "--out", str(scratch / "reads.jsonl")]
        tracer_argv += ["--events", str(scratch / "events.jsonl"), *tracer_flags]
        tracer_argv += [f"--skip={pattern}" for pattern in ChromiumDriver.trace_skip]
        started = time.monotonic()
        with (scratch / "tracer.log").open("w") as tracer_log:
            tracer = subprocess.Popen(
                tracer_argv, stdout=subprocess.PIPE, stderr=tracer_log, text=True, env=env
            )
            # the tracer gives up (exit 2) within ~20 s; 40 s covers a hung one
            readable, _, _ = select.select([tracer.stdout], [], [], 40.0)
            ready = tracer.stdout.readline() if readable else ""
        took = time.monotonic() - started
    finally:
        if tracer is not None:
            tracer.terminate()
            try:
                tracer.wait(15)
            except subprocess.TimeoutExpired:
                tracer.kill()
                tracer.wait()
        os.killpg(browser.pid, 9)
        browser.wait()
    errors = [ln for ln in (scratch / "tracer.log").read_text().splitlines() if "failed:" in ln]
    return {"ready": ready.startswith("{"), "took_s": round(took, 2), "errors": errors}


def bench_tracer_attach(out_dir: Path, tries: int = 100, busy: int = 4) -> dict[str, Any]:
    """How often the tracer fails to attach to a starting Chromium browser process, attaching
    as soon as the process is 0.5 s old (``--idle-wait 0``) and as the sessions do (waiting
    for its main thread to settle); see reallymuted.testbed.tracing. The failure needs a loaded
    machine to show: ``busy`` spinning processes run meanwhile."""
    arms = {"at_min_age": ["--idle-wait", "0"], "settled": []}
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        for _ in range(busy)
    ]
    outcomes: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    try:
        with tempfile.TemporaryDirectory(prefix="reallymuted-bench-") as scratch:
            for i in range(tries):
                for arm, flags in arms.items():  # interleaved: both arms see the same load
                    outcome = _attach_once(Path(scratch) / f"{arm}-{i}", 9333, flags)
                    outcomes[arm].append(outcome)
                    if not outcome["ready"]:
                        log.info("tracer_attach %s try %d failed: %s", arm, i, outcome["errors"])
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    summary = {
        arm: {
            "tries": len(rows),
            "failed": sum(not r["ready"] for r in rows),
            "errors": sorted({e.split("failed: ", 1)[1] for r in rows for e in r["errors"]}),
            "median_ready_s": sorted(r["took_s"] for r in rows)[len(rows) // 2],
        }
        for arm, rows in outcomes.items()
    }
    result = {
        "benchmark": "tracer_attach",
        "what": f"{tries} starts of Chromium per arm, the tracer attached to each, with {busy} "
        "busy processes; failed = the tracer never got ready (root attach failed)",
        "arms": summary,
        "target": "the settled arm fails in at most 1 try in 100",
        "met": summary["settled"]["failed"] <= tries / 100,
    }
    write_json(out_dir / "tracer_attach.json", result)
    return result


BENCHMARKS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "reference_study": bench_reference_study,
    "session_overhead": bench_session_overhead,
    "extraction_throughput": bench_extraction,
    "tracer_cost": bench_tracer_cost,
    "tracer_attach": bench_tracer_attach,
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
