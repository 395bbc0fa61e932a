"""The two witnesses of a profile's telemetry: the POSTs in the packet capture (pyshark, the
body reassembled by tshark) and in the collector's log; each body decoded by the project's
decoder, and the two paired one to one by their bytes."""

from __future__ import annotations

import hashlib
import json
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

from reallymuted.analysis import telemetry
from reallymuted.analysis.evidence import read_log, request_body
from reallymuted.io import DataError

log = logging.getLogger(__name__)


def pcap_posts(pcap: str | Path, port: int) -> list[dict[str, Any]]:
    """Every HTTP POST to ``port`` in the capture, with its reassembled body, in frame order.

    pyshark (tshark's JSON with raw bytes) in this process, closed before returning: the
    frame is the one that completed the request (its time is when the record was on the
    wire in full). pyshark replaces the process's asyncio child watcher with one bound to its
    own loop, which it closes; the previous watcher is put back, or a later asyncio
    subprocess in this process (Playwright starting Chromium) fails with "child watcher is
    not activated".
    """
    import asyncio

    import pyshark

    if not Path(pcap).is_file():
        raise DataError(f"{pcap}: capture file missing")
    watcher = asyncio.get_child_watcher()
    display_filter = f'tcp.dstport == {port} && http.request.method == "POST"'
    capture = pyshark.FileCapture(
        str(pcap),
        display_filter=display_filter,
        decode_as={f"tcp.port=={port}": "http"},
        use_json=True,
        include_raw=True,
        keep_packets=False,
    )
    posts = []
    try:
        for packet in capture:
            http = packet.http
            try:
                raw = http.get_field("file_data_raw")
            except AttributeError:  # a POST without a body
                body = b""
            else:
                body = bytes.fromhex(raw[0] if isinstance(raw, list) else str(raw))
            uri = str(http.get_field("request.full_uri"))
            posts.append(
                {
                    "frame": int(packet.number),
                    "time_epoch": float(Decimal(packet.sniff_timestamp)),
                    "client_port": int(packet.tcp.get_field("srcport")),
                    "tcp_stream": int(packet.tcp.get_field("stream")),
                    "path": "/" + uri.split("://", 1)[-1].split("/", 1)[-1],
                    "body": body,
                    "sha256": hashlib.sha256(body).hexdigest(),
                }
            )
    finally:
        try:
            capture.close()
        except pyshark.capture.capture.TSharkCrashException as exc:
            _check_crash(exc, pcap, port, display_filter, posts)
        finally:
            asyncio.set_child_watcher(watcher)
    return posts


def _check_crash(
    exc: Exception, pcap: str | Path, port: int, display_filter: str, posts: list[dict[str, Any]]
) -> None:
    """pyshark's close reports a crash (exit 255) when its child watcher missed tshark's exit
    ("Unknown child process pid", a race on a short capture). Keep the posts only if tshark
    itself, asked again in bulk, lists exactly the frames they came from; raise otherwise."""
    import subprocess

    argv = ["tshark", "-r", str(pcap), "-d", f"tcp.port=={port},http", "-Y", display_filter]
    out = subprocess.run(
        [*argv, "-T", "fields", "-e", "frame.number"], capture_output=True, text=True, check=False
    )
    frames = [int(f) for f in out.stdout.split()] if out.returncode == 0 else None
    if frames != [p["frame"] for p in posts]:
        raise DataError(f"{pcap}: tshark failed while reading the POSTs ({exc})") from exc
    log.warning(
        "%s: pyshark reported tshark crashed at close, but every POST frame was read "
        "(%d, as tshark lists them): kept",
        pcap,
        len(posts),
    )


def collector_posts(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The POSTs the collector logged, with their bodies; and counts of every log event."""
    rows = read_log(path)
    counts: dict[str, int] = {}
    posts = []
    for row in rows:
        event = row.get("event", "")
        key = f"{event}_{row['method']}" if event == "request" else event
        counts[key] = counts.get(key, 0) + 1
        if event == "request" and row["method"] == "POST":
            body = request_body(row)
            if hashlib.sha256(body).hexdigest() != row.get("sha256"):
                raise DataError(f"{path}:{row['line']}: body does not match its sha256")
            posts.append(
                {
                    "line": row["line"],
                    "t": row["t"],
                    "epoch": row["epoch"],
                    "client_port": int(row["client"].rsplit(":", 1)[1]),
                    "path": row["path"],
                    "body": body,
                    "sha256": row["sha256"],
                }
            )
    return posts, counts


def decode_body(body: bytes, name: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Interval rows of one POST body (the project's decoder) and its problems.

    Each row also gets ``start_time``/``end_time`` (the payload's ``sourceMetadata``), which the
    decoder's table does not carry.
    """
    report = telemetry.decode_bytes(body, name)
    problems = [f"{p.severity}: {p.reason}" for p in report.problems]
    if report.records_found == 0:
        problems.append("error: no telemetry record in the body")
    times: list[tuple[str | None, str | None]] = []
    try:
        for entry in json.loads(body)["telemetrics"]:
            payload, _ = telemetry.decode_gzipb64(entry["v"]["gzipb64data"])
            meta = payload["event"]["sourceMetadata"]
            times += [(meta.get("startTime"), meta.get("endTime"))] * len(
                payload["event"]["intervals"]
            )
    except (ValueError, KeyError, TypeError, telemetry.RecordError):
        times = []
    rows = []
    for k, row in enumerate(report.rows):
        start, end = times[k] if len(times) == len(report.rows) else (None, None)
        rows.append({**row, "entry": row["record"], "start_time": start, "end_time": end})
    return rows, problems


def pair(
    pcap: list[dict[str, Any]], collector: list[dict[str, Any]]
) -> list[tuple[dict[str, Any] | None, dict[str, Any] | None]]:
    """One-to-one pairs of capture and collector POSTs with identical bodies, in capture order.

    A POST seen by one witness only is paired with None (collector-only ones last).
    """
    left = list(collector)
    pairs: list[tuple[dict[str, Any] | None, dict[str, Any] | None]] = []
    for post in pcap:
        same = [c for c in left if c["sha256"] == post["sha256"]]
        preferred = [c for c in same if c["client_port"] == post["client_port"]] or same
        if preferred:
            left.remove(preferred[0])
            pairs.append((post, preferred[0]))
        else:
            pairs.append((post, None))
    return pairs + [(None, c) for c in left]
