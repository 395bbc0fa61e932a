"""Telemetry of the testbed profiles: records decoded from the capture, matched to the collector.

A ``webex-2021`` profile session (:mod:`reallymuted.testbed.drivers.profile`) POSTs one Webex-format
``wmequality`` record per telemetry interval to the project's collector. Two witnesses hold each
record: the packet capture (``traffic.pcapng``: the bytes on the wire) and the collector's own
log (``collector.jsonl``: what the server received). This module

* takes every HTTP POST to the collector's port out of the capture with **pyshark** (tshark's
  HTTP dissector reassembles the body; the bytes come from ``http.file_data``'s raw value),
  decodes each body with the project's decoder (:mod:`reallymuted.analysis.telemetry`), does
  the same for every POST the collector logged, and pairs the two one to one (identical body
  bytes; same TCP client port preferred): :mod:`~reallymuted.analysis.telemetry.witnesses`;
* compares the decoded values of each pair: a record that is in one witness only, or decodes
  differently, stays in the table with ``match`` false and the reason in ``mismatch`` — never
  dropped;
* places each interval on the session clock (the payload's ``startTime``/``endTime``), gives it
  the share of it spent muted, and the stimulus level the OS witness measured over it, with the
  gains our gain model predicts from that level
  (:mod:`~reallymuted.analysis.telemetry.gainmodel`), so "the gains follow the input level" is
  a number (Pearson's r) rather than an impression; and how many of the interval's frames the
  page heard holding a gap (``page_gap_frames``):
  digital silence from its audio graph, not from the microphone.

Every profile session gets a check row, also those that post nothing: for ``zoom-native``,
``webrtc-soft-mute`` and ``native-flags-only`` the check says how many POSTs the capture and the
collector saw (zero expected) and what the client sent while muted in RTP (rate, and the RFC
6464 audio levels in clear: -127 dBov is silence, anything else is derived from the audio).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reallymuted.analysis import telemetry
from reallymuted.analysis.evidence import (
    SESSION_KEYS,
    Segment,
    load_manifest,
    mute_segments,
    session_keys,
    source_label,
    value_key,
)
from reallymuted.analysis.telemetry.gainmodel import (
    frame_gain,
    level_dbfs,
    page_gap_frames,
    pearson,
)
from reallymuted.analysis.telemetry.witnesses import collector_posts, decode_body, pair, pcap_posts
from reallymuted.io import DataError, read_jsonl, write_csv, write_json
from reallymuted.study import TELEMETRY_PROFILES

log = logging.getLogger(__name__)

SOURCE = "testbed-profile"
MUTED_SHARE = 0.9  # an interval at least this much muted is "muted" (this little: "unmuted")
GRACE_S = 0.5  # RTP right after a mute may still carry the last audio frames
SILENCE_DBOV = -127  # RFC 6464: the level of digital silence
VALUE_COLUMNS = [
    "interval",
    *telemetry.LEVELS.values(),
    "capture_packets_per_second",
    "record_timestamp",
]
ROW_COLUMNS = [
    *SESSION_KEYS,
    "record",
    "entry",
    "interval",
    "frame",
    "time_epoch",
    "t",
    "tcp_stream",
    "client_port",
    "interval_start_t",
    "interval_end_t",
    "muted_share",
    "state",
    *telemetry.LEVELS.values(),
    "capture_packets_per_second",
    "page_gap_frames",
    "record_timestamp",
    "collector_line",
    "collector_t",
    "match",
    "mismatch",
    "stimulus_dbfs",
    "model_max_gain",
    "model_mean_gain",
    "model_min_gain",
]


# --- one session --------------------------------------------------------------------------


def _epoch(iso: str | None) -> float:
    if not iso:
        return float("nan")
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("nan")


def muted_share(start: float, end: float, segments: list[Segment]) -> float:
    """Share of [start, end) spent in muted segments (NaN for an empty interval)."""
    if not end > start:
        return float("nan")
    muted = sum(
        max(0.0, min(end, s.end) - max(start, s.start)) for s in segments if s.state == "muted"
    )
    return muted / (end - start)


def share_state(share: float) -> str:
    if math.isnan(share):
        return "unknown"
    if share >= MUTED_SHARE:
        return "muted"
    return "unmuted" if share <= 1 - MUTED_SHARE else "mixed"


def stimulus_levels(os_ticks: pd.DataFrame, start: float, end: float) -> dict[str, float]:
    """The stimulus over [start, end) as the OS witness measured it, and the modelled gains.

    The witness's 20 ms ticks stand in for the page's 10 ms frames (a steady tone has the
    same RMS in both; speech differs a little).
    """
    ticks = os_ticks[(os_ticks.t >= start) & (os_ticks.t < end)]
    if ticks.empty or not end > start:
        return {
            "stimulus_dbfs": float("nan"),
            "model_max_gain": float("nan"),
            "model_mean_gain": float("nan"),
            "model_min_gain": float("nan"),
        }
    rms = ticks.rms.to_numpy(dtype=float)
    gains = frame_gain(rms)
    return {
        "stimulus_dbfs": float(np.mean(level_dbfs(rms))),
        "model_max_gain": float(gains.max()),
        "model_mean_gain": float(np.round(gains.mean())),
        "model_min_gain": float(gains.min()),
    }


def _values(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(row.get(c) for c in VALUE_COLUMNS)


def _compare(
    post: dict[str, Any] | None,
    logged: dict[str, Any] | None,
    rows_pcap: list[dict[str, Any]],
    rows_coll: list[dict[str, Any]],
    problems: list[str],
) -> str:
    """Why a record's two witnesses disagree ('' when they agree)."""
    if post is None:
        return "in the collector's log only (not in the capture)"
    if logged is None:
        return "in the capture only (not in the collector's log)"
    if problems:
        return "; ".join(problems)
    if [_values(r) for r in rows_pcap] != [_values(r) for r in rows_coll]:
        return "decoded values differ between capture and collector"
    return ""


def session_telemetry(
    session_dir: str | Path, packets_path: str | Path
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per decoded interval of one profile session, and the session's check."""
    session = Path(session_dir)
    manifest = load_manifest(session)
    keys = session_keys(manifest)
    options = manifest.get("options", {})
    events = read_jsonl(session / "events.jsonl")
    segments = mute_segments(events)
    gaps = page_gap_frames(events)
    epoch0 = float(manifest["start_epoch"])
    collector_url = (manifest.get("endpoints") or {}).get("collector")
    if not collector_url:
        raise DataError(f"{session}/manifest.json: no endpoints.collector (not a profile session)")
    port = int(collector_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])

    captured = pcap_posts(session / "traffic.pcapng", port)
    logged, log_counts = collector_posts(session / "collector.jsonl")
    reads = pd.DataFrame(read_jsonl(session / "mic_trace.jsonl"))
    os_ticks = reads[(reads.api == "os:pipe-source") & reads.rms.notna()]

    rows: list[dict[str, Any]] = []
    mismatches: list[str] = []
    for record, (post, entry) in enumerate(pair(captured, logged), 1):
        rows_pcap, problems_pcap = (
            decode_body(post["body"], f"traffic.pcapng#{post['frame']}") if post else ([], [])
        )
        rows_coll, problems_coll = (
            decode_body(entry["body"], f"collector.jsonl:{entry['line']}") if entry else ([], [])
        )
        problems = [f"capture {p}" for p in problems_pcap if p.startswith("error")]
        problems += [f"collector {p}" for p in problems_coll if p.startswith("error")]
        reason = _compare(post, entry, rows_pcap, rows_coll, problems)
        if reason:
            mismatches.append(f"record {record}: {reason}")
        for interval_row in rows_pcap or rows_coll or [{}]:
            start = _epoch(interval_row.get("start_time")) - epoch0
            end = _epoch(interval_row.get("end_time")) - epoch0
            share = muted_share(start, end, segments)
            rows.append(
                {
                    **keys,
                    "record": record,
                    "entry": interval_row.get("entry"),
                    "interval": interval_row.get("interval"),
                    "frame": post["frame"] if post else None,
                    # as text: the tables' 6-significant-digit floats would round it to 1000 s
                    "time_epoch": f"{post['time_epoch']:.6f}" if post else None,
                    "t": post["time_epoch"] - epoch0 if post else None,
                    "tcp_stream": post["tcp_stream"] if post else None,
                    "client_port": (post or entry or {}).get("client_port"),
                    "interval_start_t": start,
                    "interval_end_t": end,
                    "muted_share": share,
                    "state": share_state(share),
                    **{c: interval_row.get(c) for c in telemetry.LEVELS.values()},
                    "capture_packets_per_second": interval_row.get("capture_packets_per_second"),
                    "page_gap_frames": gaps.get(interval_row.get("interval")),
                    "record_timestamp": interval_row.get("record_timestamp"),
                    "collector_line": entry["line"] if entry else None,
                    "collector_t": entry["t"] if entry else None,
                    "match": not reason,
                    "mismatch": reason,
                    **stimulus_levels(os_ticks, start, end),
                }
            )
    table = pd.DataFrame(rows, columns=ROW_COLUMNS)
    check = _check(
        manifest, keys, options, events, segments, table, captured, logged, log_counts, mismatches
    )
    check.update(_muted_traffic(packets_path, segments))
    check["audio_derived_muted"] = bool(
        check["muted_posts"] > 0
        or any(level != SILENCE_DBOV for level in check["muted_rtp_levels_dbov"])
    )
    return table, check


def _check(
    manifest: Mapping[str, Any],
    keys: Mapping[str, Any],
    options: Mapping[str, Any],
    events: list[dict[str, Any]],
    segments: list[Segment],
    table: pd.DataFrame,
    captured: list[dict[str, Any]],
    logged: list[dict[str, Any]],
    log_counts: Mapping[str, int],
    mismatches: list[str],
) -> dict[str, Any]:
    """The session's summary: counts at each witness, the match verdict, the gain check."""
    epoch0 = float(manifest["start_epoch"])
    leave_t = next(e["t"] for e in events if e["event"] == "leave")
    interval_s = options.get("telemetry_interval_s")
    # the page starts its interval clock with the meter's first frames (page_telemetry_start);
    # a boundary reached before leave is one record
    started = [e for e in events if e["event"] == "page_telemetry_start"]
    expected: int | None = 0
    if options.get("profile") in TELEMETRY_PROFILES:
        expected = None  # no clock started: no record can be expected, and none is "enough"
        if started and interval_s:
            origin_t = started[0]["origin_ms"] / 1000 - epoch0
            expected = math.floor((leave_t - origin_t) / float(interval_s))
    post_times = [p["time_epoch"] - epoch0 for p in captured]
    muted_posts = sum(
        1 for t in post_times if any(s.start <= t < s.end for s in segments if s.state == "muted")
    )
    decoded = table.dropna(subset=["audio_mean_gain"])
    spacing = np.diff(sorted({r for r in decoded.interval_start_t.dropna()}))
    gains = decoded[["audio_max_gain", "audio_mean_gain", "audio_min_gain"]].to_numpy(float)
    records = table.drop_duplicates("record")
    return {
        **keys,
        "profile": options.get("profile"),
        "telemetry_interval_s": interval_s,
        "expected_records": expected,
        "records_as_expected": expected is not None and len(captured) == expected,
        "posts_pcap": len(captured),
        "posts_collector": len(logged),
        "requests_collector": sum(v for k, v in log_counts.items() if k.startswith("request_")),
        "collector_errors": int(log_counts.get("error", 0)),
        "records_matched": int(records.match.sum()) if len(records) else 0,
        "match": not mismatches and len(captured) == len(logged),
        "mismatches": "; ".join(mismatches),
        "intervals": len(decoded),
        "intervals_muted": int((decoded.state == "muted").sum()),
        "muted_posts": muted_posts,
        "record_spacing_s_median": float(np.median(spacing)) if len(spacing) else None,
        "gain_min": float(np.nanmin(gains)) if gains.size else None,
        "gain_max": float(np.nanmax(gains)) if gains.size else None,
        "gain_r": pearson(decoded.audio_mean_gain, decoded.stimulus_dbfs),
        "model_mean_gain_max_error": float(
            (decoded.audio_mean_gain.astype(float) - decoded.model_mean_gain).abs().max()
        )
        if len(decoded)
        else None,
        "capture_packets_per_second": sorted(
            {int(v) for v in decoded.capture_packets_per_second.dropna()}
        ),
        "volumes": sorted({int(v) for c in telemetry.VOLUME_COLUMNS for v in decoded[c].dropna()}),
        "notices": sum(1 for e in events if e["event"] == "page_notice_shown"),
        "notices_muted": sum(
            1
            for e in events
            if e["event"] == "page_notice_shown"
            and any(s.start <= e["t"] < s.end for s in segments if s.state == "muted")
        ),
    }


def _muted_traffic(packets_path: str | Path, segments: list[Segment]) -> dict[str, Any]:
    """What the client sent in RTP while muted (after a short grace): rate and clear levels."""
    packets = pd.read_parquet(packets_path)
    sent = packets[(packets.direction == "sent") & (packets.protocol == "rtp")]
    muted = [s for s in segments if s.state == "muted" and s.end - s.start > GRACE_S]
    duration = sum(s.end - s.start - GRACE_S for s in muted)
    inside = np.zeros(len(sent), dtype=bool)
    for s in muted:
        inside |= ((sent.t >= s.start + GRACE_S) & (sent.t < s.end)).to_numpy()
    levels = sent[inside].audio_level_dbov.dropna()
    return {
        "muted_rtp_packets_per_s": float(inside.sum() / duration) if duration else None,
        "muted_rtp_levels_dbov": sorted({int(v) for v in levels}),
    }


def write_session(
    session_dir: str | Path, packets_path: str | Path, table_out: str | Path, check_out: str | Path
) -> None:
    table, check = session_telemetry(session_dir, packets_path)
    write_csv(table_out, table)
    write_json(check_out, check)
    log.info(
        "%s: %d POST(s) in the capture, %d at the collector, match %s, %d interval(s), r %.3f",
        session_dir,
        check["posts_pcap"],
        check["posts_collector"],
        check["match"],
        check["intervals"],
        check["gain_r"],
    )


# --- the study's tables -------------------------------------------------------------------


def study_values(table: pd.DataFrame, checks: pd.DataFrame) -> dict[str, Any]:
    """Named values per profile app (and per app and stimulus for the gain check)."""
    values: dict[str, Any] = {
        "source": source_label(checks.get("source", [])),
        "sessions": len(checks),
    }
    values["all_match"] = bool(checks.match.all()) if len(checks) else None
    for app, group in checks.groupby("app", sort=True):
        values[value_key("sessions", app)] = len(group)
        values[value_key("posts_pcap", app)] = int(group.posts_pcap.sum())
        values[value_key("posts_collector", app)] = int(group.posts_collector.sum())
        values[value_key("records_matched", app)] = int(group.records_matched.sum())
        values[value_key("match", app)] = bool(group.match.all())
        values[value_key("expected_records", app)] = int(group.expected_records.sum())
        values[value_key("intervals_muted", app)] = int(group.intervals_muted.sum())
        values[value_key("muted_posts", app)] = int(group.muted_posts.sum())
        values[value_key("audio_derived_muted", app)] = bool(group.audio_derived_muted.any())
        values[value_key("notices_muted", app)] = int(group.notices_muted.sum())
        rates = group.muted_rtp_packets_per_s.dropna()
        values[value_key("muted_rtp_packets_per_s", app)] = (
            float(rates.mean()) if len(rates) else None
        )
    decoded = table.dropna(subset=["audio_mean_gain"])
    for (app, stimulus), group in decoded.groupby(["app", "stimulus"], sort=True):
        gains = group[["audio_max_gain", "audio_mean_gain", "audio_min_gain"]].to_numpy(float)
        values[value_key("intervals", app, stimulus)] = len(group)
        values[value_key("gain_r", app, stimulus)] = pearson(
            group.audio_mean_gain, group.stimulus_dbfs
        )
        values[value_key("gain_range", app, stimulus)] = [
            float(np.nanmin(gains)),
            float(np.nanmax(gains)),
        ]
        values[value_key("model_mean_gain_max_error", app, stimulus)] = float(
            (group.audio_mean_gain.astype(float) - group.model_mean_gain).abs().max()
        )
        spacing = group.sort_values(["rep", "interval_start_t"]).groupby("rep").interval_start_t
        gaps = pd.concat([s.diff() for _, s in spacing]).dropna()
        values[value_key("record_spacing_s_median", app, stimulus)] = (
            float(gaps.median()) if len(gaps) else None
        )
        values[value_key("capture_packets_per_second", app, stimulus)] = sorted(
            {int(v) for v in group.capture_packets_per_second.dropna()}
        )
        values[value_key("volumes", app, stimulus)] = sorted(
            {int(v) for c in telemetry.VOLUME_COLUMNS for v in group[c].dropna()}
        )
    return values


def write_study(
    table_paths: list[str], check_paths: list[str], out: Mapping[str, str | Path]
) -> None:
    """Every profile session's intervals and checks in two tables, and the named values."""
    order = ["source", "app", "mute_mode", "stimulus", "rep"]
    frames = [pd.read_csv(p, dtype={"time_epoch": str}) for p in table_paths]
    frames = [f for f in frames if not f.empty]
    table = (
        pd.concat(frames, ignore_index=True).sort_values([*order, "record"], kind="stable")
        if frames
        else pd.DataFrame(columns=ROW_COLUMNS)
    )
    checks = pd.DataFrame([json.loads(Path(p).read_text()) for p in check_paths])
    if len(checks):
        checks = checks.sort_values(order, kind="stable")
        for column in ("capture_packets_per_second", "volumes", "muted_rtp_levels_dbov"):
            checks[column] = checks[column].map(lambda v: " ".join(str(x) for x in v))
    write_csv(out["table"], table)
    write_csv(out["check"], checks)
    values = study_values(table, checks if len(checks) else pd.DataFrame(columns=["app"]))
    write_json(out["values"], values)
    log.info("%d profile session(s), %d interval(s)", len(checks), len(table))
