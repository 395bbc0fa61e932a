"""Packet capture for a session: dumpcap or tshark on the namespace's loopback interface.

The session's network namespace has only ``lo``, so capturing it records every packet the
client sends and receives and nothing from the rest of the machine. The capture is stopped
with SIGINT, which makes dumpcap/tshark close the pcapng file properly, once the kernel has
handed over the last packets (:func:`wait_last_block`).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

TOOLS = ("dumpcap", "tshark")
# A pcapng file holds a section header and an interface description before any packet.
_MIN_HEADER_BYTES = 28 + 20
# libpcap on Linux (TPACKET_V3) hands packets to dumpcap/tshark in blocks, each given to them
# when full or when its timeout (dumpcap's read timeout, 250 ms) expires; a block still open
# at SIGINT is lost. Measured with dumpcap 4.0.17 on lo: 30 datagrams sent 0.2 s before SIGINT
# were all lost, 0.26 s before all kept (tests/test_session.py shows the wait keeps them).
BLOCK_TIMEOUT_S = 0.25


def capture_command(
    tool: str, out: Path, *, interface: str = "lo", capture_filter: str | None = None
) -> list[str]:
    """The capture command line; ``capture_filter`` is a BPF expression (or None: everything)."""
    if tool not in TOOLS:
        raise ValueError(f"capture tool {tool!r}: expected one of {', '.join(TOOLS)}")
    argv = [tool, "-i", interface, "-q", "-w", str(out)]
    if tool == "tshark":
        argv += ["-F", "pcapng"]
    if capture_filter:
        argv += ["-f", capture_filter]
    return argv


def wait_capture_ready(out: Path, alive: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until the capture has written its pcapng header (it is then capturing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the capture exited during start-up")
        if out.exists() and out.stat().st_size >= _MIN_HEADER_BYTES:
            return
        time.sleep(0.02)
    raise TimeoutError(f"capture did not start writing {out.name} within {timeout:.0f} s")


def wait_last_block(last_traffic: float, margin_s: float = 0.15) -> float:
    """Sleep until the block holding packets sent at ``last_traffic`` (``time.monotonic()``)
    has been handed over, so that stopping the capture keeps them; the seconds slept."""
    wait = max(0.0, last_traffic + BLOCK_TIMEOUT_S + margin_s - time.monotonic())
    time.sleep(wait)
    return wait


def tool_version(tool: str = "tshark") -> str:
    """First line of ``tool --version``, e.g. 'TShark (Wireshark) 4.0.17 (...)'."""
    result = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
    lines = result.stdout.strip().splitlines()
    return lines[0] if lines else "unknown"


def rtp_packets(pcap: Path, display_filter: str = "rtp") -> list[dict[str, float | int | str]]:
    """RTP packets of a capture (heuristic RTP decoding), for checks and quick summaries.

    Each row: time (epoch s), src/dst ports, UDP length, payload type, SSRC. The full
    extraction (packets.parquet) is the extract stage's job; this is the instrument's own check.
    """
    fields = ["frame.time_epoch", "udp.srcport", "udp.dstport", "udp.length", "rtp.p_type"]
    fields.append("rtp.ssrc")
    argv = ["tshark", "-r", str(pcap), "-o", "rtp.heuristic_rtp:TRUE", "-Y", display_filter]
    argv += ["-T", "fields", "-E", "separator=|"]
    for f in fields:
        argv += ["-e", f]
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    rows: list[dict[str, float | int | str]] = []
    for line in result.stdout.splitlines():
        parts = line.split("|")
        if len(parts) != len(fields) or not parts[0]:
            continue
        rows.append(
            {
                "time": float(parts[0]),
                "sport": int(parts[1] or 0),
                "dport": int(parts[2] or 0),
                "udp_length": int(parts[3] or 0),
                "payload_type": int(parts[4].split(",")[0] or -1),
                "ssrc": parts[5],
            }
        )
    return rows
