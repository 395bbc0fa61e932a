"""The paper's attack on evidence this project captures: activities heard through Webex telemetry.

While the user is muted, a background activity (PAPER.md C1) plays into the microphone; the
``webex-2021`` testbed profile keeps reading it and posts a ``wmequality`` record with the
interval's gain statistics (T1); the attacker — anyone who sees the plaintext telemetry —
infers the activity from the gains (C2-C6). Here every step is evidence the testbed captures:

1. **Stimuli** (:mod:`reallymuted.testbed.stimuli`): the ``attack`` config section generates one
   ``kind: activity`` stimulus per activity x recording x distance (e.g. ``kb2d25``), played by
   the attack's apps only (``attack.apps``, muted from join to leave: a per-app ``schedule``).
   They are sessions of the study matrix like any other (same rules, evidence, replay).
2. **Decoded telemetry**: :mod:`reallymuted.analysis.telemetry.sessions` decodes every record
   from each
   session's pcap (pyshark) and pairs it with the collector's log; this module adds to each
   decoded interval what was played (activity, recording, distance, ``stimulus_source``), where
   its evidence is (pcap and frame, collector log and line) and the **input level** of the
   samples actually fed during the interval, unweighted and A-weighted (:func:`input_levels`):
   the OS witness's tick log says which 20 ms ticks PulseAudio accepted and the tick index says
   which samples of the stimulus WAV each one carried (the writer loops the WAV on a tick grid).
3. **Figure 7 analogue**: decoded mean and min gain against the input level in dB(A) per
   interval, with Pearson's r (the paper's T2: mean gain correlates more than min gain).
4. **Classifier**: the reference classifier's own code
   (:func:`reallymuted.analysis.classifier.windows`,
   :func:`~reallymuted.analysis.classifier_training.evaluate_protocol`) on the captured triples,
   cross-validated over recordings (:func:`cross_validate`): each fold holds out one recording
   of every activity (at every distance), trains on the others with the reference's grouped
   model selection inside, and the held-out predictions are pooled. A window never mixes two
   sessions and no recording is on both sides of any split (the ``group`` column).

THE INPUT LEVEL: ``input_dbfs`` is the RMS of the interval's fed samples in dB re full scale
(RMS 1.0: a full-scale sine is -3 dB, as in the gain model); ``input_dba`` the same after
A-weighting (IEC 61672-1 analog response, applied exactly in the frequency domain over the
interval's samples, :func:`a_weighting_db`). It is a digital level (dB(A) re full scale), not a
sound pressure level: the paper measured dBA in the room. The page's interval boundaries and
the writer's ticks are on one session clock but the audio reaches the page some tens of ms
after its tick is written; at 2 s intervals that misplaces at most a few percent of the samples.

Outputs carry ``source`` = ``testbed-profile`` (a model of Webex measured for real, never Webex
itself) and ``stimulus_source`` = ``synthetic`` | ``recordings``; synthetic stimuli are the
project's procedural sounds, so accuracy on them is not the paper's figure.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from reallymuted.analysis import classifier, classifier_summaries
from reallymuted.analysis.evidence import driver_keys, load_manifest, source_label
from reallymuted.analysis.telemetry.sessions import frame_gain, frame_gaps, pearson
from reallymuted.io import DataError, read_jsonl, sha256_file, write_csv, write_json
from reallymuted.study import ACTIVITIES, DEFAULT_INTERVAL_S, TELEMETRY_PROFILES, matrix

log = logging.getLogger(__name__)

SOURCE = "testbed-profile"
REFERENCE_STIMULUS_SOURCE = "authors-videos"  # the paper's ASMR videos played over the air
HELDOUT = "heldout"
OS_API = "os:pipe-source"
GAIN_COLUMNS = {"max": "audio_max_gain", "mean": "audio_mean_gain", "min": "audio_min_gain"}
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
    "record",
    "interval",
    "interval_start_t",
    "interval_end_t",
    "muted_share",
    "state",
    "audio_max_gain",
    "audio_mean_gain",
    "audio_min_gain",
    "capture_packets_per_second",
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
METRIC_COLUMNS = [*classifier.METRIC_COLUMNS, "stimulus_source", "folds"]
CURVE_COLUMNS = [
    "source",
    "stimulus_source",
    "window",
    "interval_s",
    "seconds_observed",
    "minutes_observed",
    "model",
    "eval_set",
    "macro_accuracy",
    "macro_precision",
    "n_windows",
    "fold_min",
    "fold_max",
    "chance",
]


# --- the input level -----------------------------------------------------------------------


def a_weighting_db(freq_hz: float | np.ndarray) -> np.ndarray:
    """A-weighting in dB at these frequencies (IEC 61672-1: 0 dB at 1 kHz, -inf at 0 Hz)."""
    f2 = np.square(np.asarray(freq_hz, dtype=float))
    with np.errstate(divide="ignore"):
        ra = (12194.0**2 * f2**2) / (
            (f2 + 20.6**2) * np.sqrt((f2 + 107.7**2) * (f2 + 737.9**2)) * (f2 + 12194.0**2)
        )
        return 20 * np.log10(ra) + 2.0


def level_db(samples: np.ndarray, rate: int, weighted: bool = False) -> float:
    """Power level of ``samples`` (fractions of full scale) in dB re RMS 1.0, optionally
    A-weighted (exactly, per FFT bin, by Parseval); NaN for no samples, -inf for silence."""
    x = np.asarray(samples, dtype=float)
    if len(x) == 0:
        return float("nan")
    if not weighted:
        power = float(np.mean(np.square(x)))
    else:
        spectrum = np.abs(np.fft.rfft(x)) ** 2
        bins = np.full(len(spectrum), 2.0)  # one-sided: every bin but DC and Nyquist twice
        bins[0] = 1.0
        if len(x) % 2 == 0:
            bins[-1] = 1.0
        gain = 10 ** (a_weighting_db(np.fft.rfftfreq(len(x), 1 / rate)) / 10)
        power = float(np.sum(bins * gain * spectrum) / len(x) ** 2)
    with np.errstate(divide="ignore"):
        return float(10 * np.log10(power))


def fed_samples(ticks: pd.DataFrame, stimulus: np.ndarray, per_tick: int) -> np.ndarray:
    """The samples these writer ticks put into the microphone (the ``frames`` it accepted).

    The writer (:func:`reallymuted.testbed.audio.feed`) cuts the stimulus into whole ticks and plays
    tick ``i`` as chunk ``i mod chunks``, whether or not PulseAudio takes it; a tick's
    ``frames`` are the frames PulseAudio took (all or none: a pipe write this small is atomic).
    """
    chunks = len(stimulus) // per_tick
    if chunks == 0:
        raise DataError("the stimulus is shorter than one tick")
    parts = [
        stimulus[(tick % chunks) * per_tick : (tick % chunks) * per_tick + frames]
        for tick, frames in zip(ticks.tick.astype(int), ticks.frames.astype(int), strict=True)
        if frames > 0
    ]
    return np.concatenate(parts) if parts else np.empty(0)


def input_levels(
    os_ticks: pd.DataFrame, stimulus: np.ndarray, per_tick: int, rate: int, start: float, end: float
) -> dict[str, float]:
    """Input level over [start, end) of the session clock: ticks accepted, seconds fed,
    unweighted and A-weighted level of the fed samples (see the module docstring), and the
    max/mean/min gain the profile's gain model gives those samples in 10 ms frames
    (:func:`reallymuted.analysis.telemetry.sessions.frame_gain`): what the record should say;
    and how many of those frames hold a gap
    (:func:`~reallymuted.analysis.telemetry.sessions.frame_gaps`)."""
    ticks = os_ticks[(os_ticks.t >= start) & (os_ticks.t < end)]
    samples = fed_samples(ticks, stimulus, per_tick) if len(ticks) else np.empty(0)
    frame = rate // 100
    frames = samples[: len(samples) // frame * frame].reshape(-1, frame)
    gains = frame_gain(np.sqrt(np.mean(np.square(frames), axis=1))) if len(frames) else []
    gaps = frame_gaps(samples, rate)
    return {
        "input_ticks": int((ticks.frames > 0).sum()),
        "input_seconds": len(samples) / rate,
        "input_dbfs": level_db(samples, rate),
        "input_dba": level_db(samples, rate, weighted=True),
        "model_max_gain": float(np.max(gains)) if len(gains) else float("nan"),
        "model_mean_gain": float(np.floor(np.mean(gains) + 0.5)) if len(gains) else float("nan"),
        "model_min_gain": float(np.min(gains)) if len(gains) else float("nan"),
        "model_gap_frames": int(gaps.sum()),
    }


# --- the attack's sessions -------------------------------------------------------------------


def telemetry_apps(config: Mapping[str, Any]) -> list[str]:
    """The attack's apps whose sessions post Webex telemetry (the webex-2021 profile)."""
    apps = config["sessions"]["apps"]
    return [
        app
        for app in config["attack"]["apps"]
        if apps[app]["driver"] == "profile" and apps[app].get("profile") in TELEMETRY_PROFILES
    ]


def attack_sessions(
    config: Mapping[str, Any], telemetry_only: bool = True, guarded: bool | None = False
) -> list[tuple[str, str, str, int]]:
    """(app, mode, stimulus, rep) of every telemetry session of the attack in the study matrix
    (none when the stage is off or ``sessions.select`` leaves the attack's apps out); with
    ``telemetry_only=False`` the sessions of every attack app (the leakage test's). Those of
    the apps without the OS-level mute by default, ``guarded=True`` those with it (``guard:
    true``, docs/guard.md), ``None`` both."""
    if not config["stages"].get("attack"):
        return []
    apps = set(telemetry_apps(config) if telemetry_only else config["attack"]["apps"])
    entries = config["sessions"]["apps"]
    if guarded is not None:
        apps = {a for a in apps if bool(entries[a].get("guard")) == guarded}
    stimuli = config["sessions"]["stimuli"]
    return [
        key
        for key in matrix(config["sessions"])
        if key[0] in apps and stimuli[key[2]].get("kind") == "activity"
    ]


def interval_seconds(config: Mapping[str, Any]) -> float:
    """The attack's telemetry interval (one for all its telemetry apps: windows mix none)."""
    apps = config["sessions"]["apps"]
    values = {
        float(apps[a].get("telemetry_interval_s", DEFAULT_INTERVAL_S))
        for a in telemetry_apps(config)
    }
    if len(values) != 1:
        raise ValueError(f"attack.apps: one telemetry interval needed, got {sorted(values)}")
    return values.pop()


def activity_names(config_classes: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Class code -> readable name: the classifier's classes, else the stimuli's defaults."""
    return {**ACTIVITIES, **{c["code"]: c["name"] for c in config_classes}}


# --- the captured-telemetry table ------------------------------------------------------------


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
                **{
                    k: row[k]
                    for k in (
                        "record",
                        "interval",
                        "interval_start_t",
                        "interval_end_t",
                        "muted_share",
                        "state",
                        *GAIN_COLUMNS.values(),
                        "capture_packets_per_second",
                    )
                },
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


# --- the classifier on captured telemetry ----------------------------------------------------


@dataclass(frozen=True)
class CrossValidation:
    """Pooled metrics and confusion over the folds, and every fold's own rows."""

    metrics: pd.DataFrame
    confusion: pd.DataFrame
    grid: pd.DataFrame
    folds: pd.DataFrame


def pooled_scores(confusion: pd.DataFrame) -> tuple[float, float, int]:
    """Macro accuracy, macro precision and windows of a confusion table (count column),
    as ``classifier_training.macro_accuracy`` / ``macro_precision`` would give on
    the pooled predictions."""
    counts = confusion.pivot_table(
        index="true_activity", columns="predicted_activity", values="count", aggfunc="sum"
    ).fillna(0)
    labels = sorted(set(counts.index) | set(counts.columns))
    counts = counts.reindex(index=labels, columns=labels, fill_value=0)
    true_totals, predicted_totals = counts.sum(axis=1), counts.sum(axis=0)
    diagonal = pd.Series(np.diag(counts.to_numpy()), index=labels)
    present = true_totals > 0
    accuracy = float((diagonal[present] / true_totals[present]).mean())
    occurring = present | (predicted_totals > 0)
    precision = (diagonal / predicted_totals.where(predicted_totals > 0)).fillna(0.0)
    return accuracy, float(precision[occurring].mean()), int(true_totals.sum())


def cross_validate(
    minutes: pd.DataFrame,
    n: int,
    settings: Mapping[str, Any],
    labels: Sequence[str] | None = None,
) -> CrossValidation:
    """The reference protocol (:func:`classifier_training.evaluate_protocol`) once per fold,
    holding out recording number k of every activity (``heldout``; also ``heldout_{d}cm`` per
    distance when there are several), training on the other recordings with the reference's
    grouped model selection inside. Held-out predictions are pooled over the folds (their
    confusion counts summed); validation scores are the folds' mean."""
    # scikit-learn is imported here, not by the module: the workflow imports this module
    from reallymuted.analysis import classifier_training

    numbers = sorted(set(minutes.recording_number))
    if len(numbers) < 3:
        raise ValueError(
            f"{len(numbers)} recording(s) per activity: the grouped validation inside each "
            "fold needs at least 3 (attack.recordings)"
        )
    distances = sorted(set(minutes.distance_cm))
    source = str(minutes.source.iloc[0])
    metric_parts, confusion_parts, grid_parts = [], [], []
    for fold in numbers:
        held = minutes[minutes.recording_number == fold]
        evals = {HELDOUT: held}
        if len(distances) > 1:
            evals |= {f"{HELDOUT}_{d}cm": held[held.distance_cm == d] for d in distances}
        result = classifier_training.evaluate_protocol(
            minutes[minutes.recording_number != fold],
            evals,
            n,
            settings["models"],
            settings["seed"],
            **classifier_training.protocol_settings(settings),
            labels=labels,
            source=source,
        )
        metric_parts.append(result.metrics.assign(fold=fold))
        confusion_parts.append(result.confusion.assign(fold=fold))
        grid_parts.append(result.grid.assign(fold=fold))
    folds = pd.concat(metric_parts, ignore_index=True)
    confusion_folds = pd.concat(confusion_parts, ignore_index=True)
    keys = ["source", "window", "model", "eval_set"]
    rows = []
    for key, part in folds.groupby(keys, sort=False):
        row = dict(zip(keys, key, strict=True))
        if str(row["eval_set"]).startswith(HELDOUT):
            cells = confusion_folds[
                (confusion_folds.model == row["model"])
                & (confusion_folds.eval_set == row["eval_set"])
            ]
            accuracy, precision, windows = pooled_scores(cells)
        else:
            accuracy, precision = part.macro_accuracy.mean(), part.macro_precision.mean()
            windows = int(part.n_windows.sum())
        rows.append(
            {
                **row,
                "macro_accuracy": accuracy,
                "macro_precision": precision,
                "n_windows": windows,
                "folds": len(part),
            }
        )
    pooled = confusion_folds.groupby(
        [*keys, "true_activity", "predicted_activity"], sort=False, as_index=False
    )["count"].sum()
    pooled["share"] = pooled["count"] / pooled.groupby([*keys, "true_activity"], sort=False)[
        "count"
    ].transform("sum")
    return CrossValidation(
        pd.DataFrame(rows),
        pooled,
        pd.concat(grid_parts, ignore_index=True),
        folds,
    )


def window_to_files(
    minutes_path: str | Path,
    n: int,
    settings: Mapping[str, Any],
    out: Mapping[str, str | Path],
    labels: Sequence[str] | None = None,
    threads: int = 1,
) -> None:
    """Rule attack_window: the cross-validated protocol for one window length."""
    from threadpoolctl import threadpool_limits

    minutes = pd.read_csv(minutes_path, dtype={"recording_id": str, "activity": str})
    stimulus_source = " ".join(sorted(set(minutes.stimulus_source)))
    present = [c for c in (labels or []) if c in set(minutes.activity)] or None
    with threadpool_limits(limits=threads):
        result = cross_validate(minutes, n, settings, present)
    write_csv(out["metrics"], result.metrics.assign(stimulus_source=stimulus_source))
    write_csv(out["confusion"], result.confusion.assign(stimulus_source=stimulus_source))
    write_csv(out["grid"], result.grid.assign(stimulus_source=stimulus_source))
    write_csv(out["folds"], result.folds.assign(stimulus_source=stimulus_source))


def learning_curve(
    metrics: pd.DataFrame,
    folds: pd.DataFrame,
    interval_s: float,
    stimulus_source: str,
    chance: float,
    reference: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Macro accuracy against the time observed per sample (n intervals), per window, for
    the model chosen on grouped validation; with the reference's evaluation sets beside it
    (the model it chose per window, evaluation sets 1 and 2, one-minute intervals)."""
    rows = []
    for pick in classifier_summaries.select_models(metrics).itertuples():
        part = metrics[(metrics.window == pick.window) & (metrics.model == pick.model)]
        for r in part[part.eval_set.str.startswith(HELDOUT)].itertuples():
            per_fold = folds[
                (folds.window == pick.window)
                & (folds.model == pick.model)
                & (folds.eval_set == r.eval_set)
            ].macro_accuracy
            rows.append(
                {
                    "source": r.source,
                    "stimulus_source": stimulus_source,
                    "window": int(pick.window),
                    "interval_s": interval_s,
                    "seconds_observed": pick.window * interval_s,
                    "minutes_observed": pick.window * interval_s / 60,
                    "model": pick.model,
                    "eval_set": r.eval_set,
                    "macro_accuracy": r.macro_accuracy,
                    "macro_precision": r.macro_precision,
                    "n_windows": int(r.n_windows),
                    "fold_min": per_fold.min(),
                    "fold_max": per_fold.max(),
                    "chance": chance,
                }
            )
    if reference is not None and len(reference):
        for pick in classifier_summaries.select_models(reference).itertuples():
            part = reference[(reference.window == pick.window) & (reference.model == pick.model)]
            for r in part[part.eval_set.isin(["eval1", "eval2"])].itertuples():
                rows.append(
                    {
                        "source": r.source,
                        "stimulus_source": REFERENCE_STIMULUS_SOURCE,
                        "window": int(pick.window),
                        "interval_s": 60.0,
                        "seconds_observed": pick.window * 60.0,
                        "minutes_observed": float(pick.window),
                        "model": pick.model,
                        "eval_set": r.eval_set,
                        "macro_accuracy": r.macro_accuracy,
                        "macro_precision": r.macro_precision,
                        "n_windows": int(r.n_windows),
                        "fold_min": np.nan,
                        "fold_max": np.nan,
                        "chance": chance,
                    }
                )
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def classifier_values(
    metrics: pd.DataFrame, confusion: pd.DataFrame, curve: pd.DataFrame
) -> dict[str, Any]:
    """Named values of the classifier on captured telemetry (per window and the headline,
    the longest window): the chosen model, its pooled held-out macro accuracy, chance."""
    classes = sorted(set(confusion.true_activity))
    values: dict[str, Any] = {
        "classes": classes,
        "n_classes": len(classes),
        "chance_macro_accuracy": 1 / len(classes) if classes else None,
    }
    held = curve[(curve.source == SOURCE) & (curve.eval_set == HELDOUT)]
    for r in held.itertuples():
        n = r.window
        values[f"selected_model_n{n}"] = r.model
        values[f"macro_accuracy_n{n}"] = r.macro_accuracy
        values[f"macro_precision_n{n}"] = r.macro_precision
        values[f"heldout_windows_n{n}"] = r.n_windows
        values[f"macro_accuracy_fold_range_n{n}"] = [r.fold_min, r.fold_max]
        majority = metrics[
            (metrics.window == n) & (metrics.model == "majority") & (metrics.eval_set == HELDOUT)
        ]
        if len(majority):
            values[f"majority_macro_accuracy_n{n}"] = float(majority.macro_accuracy.iloc[0])
    if len(held):
        top = held.sort_values("window").iloc[-1]
        values |= {
            "headline_window": int(top.window),
            "headline_seconds_observed": float(top.seconds_observed),
            "selected_model": top.model,
            "macro_accuracy": float(top.macro_accuracy),
            "macro_precision": float(top.macro_precision),
        }
        for r in curve[
            (curve.source == SOURCE) & (curve.window == top.window) & (curve.eval_set != HELDOUT)
        ].itertuples():
            values[f"macro_accuracy_{r.eval_set}"] = r.macro_accuracy
    return values


def with_sources(values: dict[str, Any], beside: Mapping[str, tuple[Any, str]]) -> dict[str, Any]:
    """The captured values with values of other sources beside them (the reference's
    accuracies): the file's ``source`` names every source, ``source_of`` each key's."""
    captured = str(values["source"])
    source_of = {k: captured for k in values if k != "source"}
    merged = dict(values)
    for key, (value, source) in beside.items():
        merged[key], source_of[key] = value, str(source)
    merged["source"] = source_label([*captured.split(", "), *source_of.values()])
    merged["source_of"] = source_of
    return merged


def tables_to_files(
    metrics_paths: Sequence[str | Path],
    confusion_paths: Sequence[str | Path],
    fold_paths: Sequence[str | Path],
    telemetry_values_path: str | Path,
    interval_s: float,
    out: Mapping[str, str | Path],
    reference_metrics: str | Path | None = None,
) -> None:
    """Rule attack_tables: per-window results -> the attack's tables and named values."""
    sort = ["source", "window", "model", "eval_set"]
    metrics = pd.concat([pd.read_csv(p) for p in metrics_paths], ignore_index=True)
    metrics = metrics.sort_values(sort, kind="stable")
    confusion = pd.concat([pd.read_csv(p) for p in confusion_paths], ignore_index=True)
    confusion = confusion.sort_values(sort, kind="stable")
    folds = pd.concat([pd.read_csv(p) for p in fold_paths], ignore_index=True)
    stimulus_source = " ".join(sorted(set(metrics.stimulus_source)))
    reference = pd.read_csv(reference_metrics) if reference_metrics else None
    classes = sorted(set(confusion.true_activity))
    chance = 1 / len(classes) if classes else float("nan")
    curve = learning_curve(metrics, folds, interval_s, stimulus_source, chance, reference)
    values = json.loads(Path(telemetry_values_path).read_text())
    values |= {"interval_s": interval_s, "stimulus_source": stimulus_source}
    values |= classifier_values(metrics, confusion, curve)
    beside = {
        f"reference_{r.eval_set}_accuracy_n{r.window}": (r.macro_accuracy, r.source)
        for r in curve[curve.source == "reference"].itertuples()
    }
    values = with_sources(values, beside)
    write_csv(out["metrics"], metrics[METRIC_COLUMNS])
    write_csv(out["confusion"], confusion)
    write_csv(out["curve"], curve)
    write_json(out["values"], values)
