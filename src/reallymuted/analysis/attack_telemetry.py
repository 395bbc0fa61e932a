"""The captured-telemetry table of the attack (:mod:`reallymuted.analysis.attack`): one row per
decoded interval of every attack session, with what was played, where its evidence is and the
input level of the samples fed (:mod:`reallymuted.analysis.attack_input`); the classifier's
per-minute shape of it, and its named values (counts, matches, r of the gains against dB(A)).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from reallymuted.analysis import classifier
from reallymuted.analysis.attack import activity_names
from reallymuted.analysis.attack_input import input_levels
from reallymuted.analysis.evidence import driver_keys, load_manifest, source_label
from reallymuted.analysis.telemetry.gainmodel import pearson
from reallymuted.io import DataError, read_jsonl, sha256_file, write_csv, write_json

log = logging.getLogger(__name__)

OS_API = "os:pipe-source"
GAIN_COLUMNS = {"max": "audio_max_gain", "mean": "audio_mean_gain", "min": "audio_min_gain"}
# What the table takes as it is from each decoded interval (reallymuted.analysis.telemetry).
DECODED_COLUMNS = (
    "record",
    "interval",
    "interval_start_t",
    "interval_end_t",
    "muted_share",
    "state",
    *GAIN_COLUMNS.values(),
    "capture_packets_per_second",
)
TABLE_COLUMNS = [
    "source",
    "stimulus_source",
    "app",
    "mute_mode",
    "guard",
    "stimulus",
    "rep",
    "condition",
    "activity",
    "activity_name",
    "recording",
    "recording_number",
    "distance_cm",
    "interval_s",
    *DECODED_COLUMNS,
    "page_gap_frames",
    "input_ticks",
    "input_seconds",
    "input_dbfs",
    "input_dba",
    "model_max_gain",
    "model_mean_gain",
    "model_min_gain",
    "model_gap_frames",
    "page_gaps",
    "matched",
    "mismatch",
    "pcap",
    "frame",
    "time_epoch",
    "tcp_stream",
    "client_port",
    "collector_log",
    "collector_line",
    "collector_t",
    "stimulus_sha256",
]


def read_stimulus(path: str | Path, expected_sha256: str | None) -> np.ndarray:
    """The stimulus WAV as fractions of full scale; it must be the one the session played."""
    if expected_sha256 and sha256_file(path) != expected_sha256:
        raise DataError(
            f"{path}: sha256 differs from the session manifest's stimulus: the WAV changed "
            "since the session ran (rerun the session)"
        )
    data = sf.read(str(path), dtype="int16", always_2d=True)[0]
    return data[:, 0].astype(float) / 32768.0


def page_heard_gaps(page_gap_frames: Any, levels: Mapping[str, Any]) -> bool | None:
    """Did the page hear more gapped frames than the samples fed hold (its audio graph's own
    digital silence, which can lower the interval's min gain, to ~0 for a whole silent frame)?
    None when either is unknown."""
    fed = levels.get("model_gap_frames")
    if fed is None or page_gap_frames is None or not np.isfinite(page_gap_frames):
        return None
    return bool(page_gap_frames > fed)


def session_rows(
    session_dir: str | Path,
    telemetry_csv: str | Path,
    stimulus_wav: str | Path,
    spec: Mapping[str, Any],
    names: Mapping[str, str],
) -> pd.DataFrame:
    """One row per decoded interval of one attack session (see :data:`TABLE_COLUMNS`)."""
    session = Path(session_dir)
    manifest = load_manifest(session)
    guard = driver_keys(manifest)["guard"]  # the OS-level mute (docs/guard.md), on or off
    micro = manifest["microphone"]
    rate = int(micro["rate"])
    per_tick = rate * int(micro["tick_ms"]) // 1000
    stimulus = read_stimulus(stimulus_wav, (manifest.get("stimulus") or {}).get("sha256"))
    reads = pd.DataFrame(read_jsonl(session / "mic_trace.jsonl"))
    os_ticks = reads[reads.api == OS_API][["t", "tick", "frames"]]
    decoded = pd.read_csv(telemetry_csv, dtype={"time_epoch": str})
    activity = str(spec["activity"])
    rows = []
    for row in decoded.to_dict("records"):
        start, end = row["interval_start_t"], row["interval_end_t"]
        levels = (
            input_levels(os_ticks, stimulus, per_tick, rate, start, end)
            if np.isfinite(start) and np.isfinite(end)
            else {}
        )
        rows.append(
            {
                **{k: row[k] for k in ("source", "app", "mute_mode")},
                "guard": guard,
                **{k: row[k] for k in ("stimulus", "rep")},
                "condition": row["condition"],
                "stimulus_source": spec.get("source", "synthetic"),
                "activity": activity,
                "activity_name": names.get(activity, activity),
                "recording": f"{activity}{int(spec['recording'])}",
                "recording_number": int(spec["recording"]),
                "distance_cm": int(spec["distance_cm"]),
                "interval_s": (manifest.get("options") or {}).get("telemetry_interval_s"),
                **{k: row[k] for k in DECODED_COLUMNS},
                "page_gap_frames": row.get("page_gap_frames"),
                **levels,
                "page_gaps": page_heard_gaps(row.get("page_gap_frames"), levels),
                "matched": bool(row["match"]),
                "mismatch": row["mismatch"],
                "pcap": str(session / "traffic.pcapng"),
                "frame": row["frame"],
                "time_epoch": row["time_epoch"],
                "tcp_stream": row["tcp_stream"],
                "client_port": row["client_port"],
                "collector_log": str(session / "collector.jsonl"),
                "collector_line": row["collector_line"],
                "collector_t": row["collector_t"],
                "stimulus_sha256": (manifest.get("stimulus") or {}).get("sha256"),
            }
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def minutes_table(table: pd.DataFrame) -> pd.DataFrame:
    """The classifier's per-minute shape from the captured table: matched, muted intervals.

    ``recording_id`` is one uninterrupted series of intervals of one session (a session whose
    record went missing is cut there, so no window spans the gap); ``group`` is the source
    recording (e.g. ``kb2``), shared by its sessions at every distance: the unit no split cuts.
    """
    used = table[
        table.matched.astype(bool) & (table.state == "muted") & table.audio_mean_gain.notna()
    ]
    used = used.sort_values(["app", "stimulus", "rep", "interval"], kind="stable")
    frames = []
    for (app, condition, rep), part in used.groupby(["app", "condition", "rep"], sort=False):
        series = f"{app}/{condition}/rep{rep}"
        segment = (part.interval.diff().fillna(1) != 1).cumsum()
        ids = [series if s == 0 else f"{series}#{s}" for s in segment]
        frames.append(
            pd.DataFrame(
                {
                    "source": part.source,
                    "split": "captured",
                    "file": series,
                    "distance_cm": part.distance_cm,
                    "recording_id": ids,
                    "video": part.stimulus,
                    "activity": part.activity,
                    "minute": part.interval.astype(int),
                    "max": part.audio_max_gain.astype(int),
                    "mean": part.audio_mean_gain.astype(int),
                    "min": part.audio_min_gain.astype(int),
                    "group": part.recording,
                    "recording_number": part.recording_number.astype(int),
                    "stimulus_source": part.stimulus_source,
                }
            )
        )
    columns = [*classifier.MINUTE_COLUMNS, "group", "recording_number", "stimulus_source"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


def windows_per_activity(minutes: pd.DataFrame, n: int) -> dict[str, int]:
    """How many windows of ``n`` intervals each activity gives (0 for one that gives none)."""
    counts = pd.Series(classifier.windows(minutes, n).y, dtype=object).value_counts()
    return {a: int(counts.get(a, 0)) for a in dict.fromkeys(minutes.activity)}


def telemetry_values(
    table: pd.DataFrame, minutes: pd.DataFrame, window_lengths: Sequence[int]
) -> dict[str, Any]:
    """Named values of the captured telemetry: counts, matches, r against dB(A), windows."""
    muted = table[table.matched.astype(bool) & (table.state == "muted")]
    values: dict[str, Any] = {
        "source": source_label(table.source),
        "stimulus_source": " ".join(sorted(set(table.stimulus_source))) or None,
        "sessions": int(table.groupby(["app", "condition", "rep"]).ngroups),
        "intervals": len(table),
        "intervals_matched": int(table.matched.astype(bool).sum()),
        "all_matched": bool(table.matched.astype(bool).all()) if len(table) else None,
        "intervals_traced": int((table.frame.notna() & table.collector_line.notna()).sum()),
        "intervals_muted_matched": len(muted),
        "intervals_used": len(minutes),
        "recordings_per_activity": {
            a: int(g.recording.nunique()) for a, g in table.groupby("activity", sort=True)
        },
        "distances_cm": sorted(int(d) for d in set(table.distance_cm)),
        "gain_range": [
            float(np.nanmin(muted[list(GAIN_COLUMNS.values())].to_numpy(float))),
            float(np.nanmax(muted[list(GAIN_COLUMNS.values())].to_numpy(float))),
        ]
        if len(muted)
        else None,
        "input_dba_range": [float(muted.input_dba.min()), float(muted.input_dba.max())]
        if len(muted)
        else None,
        "r_points": int(muted.input_dba.notna().sum()),
        "intervals_muted_page_gaps": int(muted.page_gaps.eq(True).sum()),
        "model_mean_gain_max_error": float(
            (muted.audio_mean_gain.astype(float) - muted.model_mean_gain).abs().max()
        )
        if len(muted)
        else None,
    }
    for name, column in GAIN_COLUMNS.items():
        values[f"r_{name}_gain_dba"] = pearson(muted[column], muted.input_dba)
    values["r_mean_exceeds_r_min"] = bool(values["r_mean_gain_dba"] > values["r_min_gain_dba"])
    # the same without the intervals the page heard gaps of its own in: beside, not instead
    gapless = muted[muted.page_gaps.eq(False)]
    values["r_min_gain_dba_gapless"] = pearson(gapless.audio_min_gain, gapless.input_dba)
    for n in window_lengths:
        counts = windows_per_activity(minutes, n)
        values[f"windows_per_activity_n{n}"] = counts
        values[f"windows_min_per_activity_n{n}"] = min(counts.values()) if counts else 0
    return values


def telemetry_to_files(
    sessions: Sequence[Mapping[str, Any]],
    config_classes: Sequence[Mapping[str, Any]],
    window_lengths: Sequence[int],
    out: Mapping[str, str | Path],
) -> None:
    """Rule attack_telemetry: every attack session -> the table, the minutes, their values.

    ``sessions``: one mapping per session with ``dir``, ``telemetry`` (its telemetry.csv),
    ``stimulus`` (the WAV) and ``spec`` (the stimulus spec from the config).
    """
    names = activity_names(config_classes)
    frames = [
        session_rows(s["dir"], s["telemetry"], s["stimulus"], s["spec"], names) for s in sessions
    ]
    frames = [f for f in frames if not f.empty]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TABLE_COLUMNS)
    minutes = minutes_table(table)
    write_csv(out["table"], table)
    write_csv(out["minutes"], minutes)
    values = telemetry_values(table, minutes, window_lengths)
    write_json(out["values"], values)
    log.info(
        "%d session(s), %d interval(s), %d matched; r(mean gain, dBA) %.3f, r(min gain, dBA) %.3f",
        values["sessions"],
        values["intervals"],
        values["intervals_matched"],
        values["r_mean_gain_dba"],
        values["r_min_gain_dba"],
    )
