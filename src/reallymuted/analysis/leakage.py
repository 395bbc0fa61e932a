"""Leakage beyond telemetry: can muted *encrypted* traffic (sizes, timing) tell the
background activity? Windows of each muted session's packets, a classifier cross-validated
over recordings, and its accuracy against chance measured by shuffling activities among
recordings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reallymuted.analysis import evidence
from reallymuted.analysis.evidence import Segment, session_keys
from reallymuted.analysis.traffic import sent
from reallymuted.io import read_jsonl

log = logging.getLogger(__name__)


WINDOW_FEATURES = [
    "packets",
    "bytes",
    "size_mean",
    "size_std",
    "size_min",
    "size_max",
    "distinct_sizes",
    "gap_mean",
    "gap_std",
    "gap_max",
]


def window_features(
    packets: pd.DataFrame, segments: list[Segment], window_s: float
) -> pd.DataFrame:
    """Features of the packets the client sent, per window of muted time.

    Only what an on-path observer of encrypted traffic sees: how many packets, their sizes and
    their timing. Windows are cut inside each muted segment, never across a mute change.
    """
    out = sent(packets)
    rows = []
    for segment in (s for s in segments if s.state == "muted"):
        starts = np.arange(segment.start, segment.end - window_s + 1e-9, window_s)
        for start in starts:
            window = out[(out.t >= start) & (out.t < start + window_s)]
            sizes = window.payload_len.dropna().to_numpy(dtype=float)
            gaps = np.diff(window.t.to_numpy(dtype=float))
            rows.append(
                {
                    "start": float(start),
                    "packets": len(window),
                    "bytes": float(window.frame_len.sum()),
                    "size_mean": float(sizes.mean()) if len(sizes) else 0.0,
                    "size_std": float(sizes.std()) if len(sizes) else 0.0,
                    "size_min": float(sizes.min()) if len(sizes) else 0.0,
                    "size_max": float(sizes.max()) if len(sizes) else 0.0,
                    "distinct_sizes": len(np.unique(sizes)),
                    "gap_mean": float(gaps.mean()) if len(gaps) else window_s,
                    "gap_std": float(gaps.std()) if len(gaps) else 0.0,
                    "gap_max": float(gaps.max()) if len(gaps) else window_s,
                }
            )
    return pd.DataFrame(rows, columns=["start", *WINDOW_FEATURES])


def _grouped_cv_accuracy(
    x: np.ndarray, y: np.ndarray, g: np.ndarray, seed: int, trees: int
) -> np.ndarray:
    """Per-window hits of a random forest under recording-grouped cross-validation."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GroupKFold

    predicted = np.empty(len(y), dtype=object)
    for train, test in GroupKFold(n_splits=min(5, len(np.unique(g)))).split(x, y, g):
        model = RandomForestClassifier(n_estimators=trees, random_state=seed, n_jobs=1)
        predicted[test] = model.fit(x[train], y[train]).predict(x[test])
    return predicted == y


def leakage_test(
    features: pd.DataFrame | np.ndarray,
    labels: pd.Series | np.ndarray,
    groups: pd.Series | np.ndarray,
    seed: int,
    bootstrap: int = 1000,
    permutations: int = 100,
    trees: int = 50,
) -> dict[str, float | int | str]:
    """Accuracy of telling the background activity from windows of features, against chance:
    traffic windows (:data:`WINDOW_FEATURES`, from a DataFrame) or any matrix of them (the
    decoded telemetry's windows, :mod:`reallymuted.analysis.attack_guard`).

    Cross-validation leaves whole recordings out (grouped), so a window is never judged by a
    model that saw its own recording. The 95 % interval resamples recordings, not windows
    (windows of one recording are not independent). Chance is measured, not assumed: the same
    cross-validation with the activities shuffled among the recordings (a recording keeps one
    label), ``permutations`` times; its mean and 95th percentile are the chance level, and the
    share of shuffles scoring at least the real accuracy is the p-value. (Guessing the training
    folds' majority is no chance level here: leaving a recording out makes its activity the
    minority, so that guess scores near 0.)
    """
    y = np.asarray(labels)
    g = np.asarray(groups)
    if isinstance(features, pd.DataFrame):
        features = features[WINDOW_FEATURES]
    x = np.asarray(features, dtype=float)
    unique = np.unique(g)
    result: dict[str, float | int | str] = {
        "windows": len(y),
        "recordings": len(unique),
        "activities": len(np.unique(y)),
    }
    if len(unique) < 2 or len(np.unique(y)) < 2:
        return {**result, "verdict": "not enough recordings or activities to test"}
    correct = _grouped_cv_accuracy(x, y, g, seed, trees)
    accuracy = float(correct.mean())
    rng = np.random.default_rng(seed)
    by_group = {k: np.flatnonzero(g == k) for k in unique}
    label_of = {k: y[index[0]] for k, index in by_group.items()}
    null = []
    for _ in range(permutations):
        shuffled = dict(zip(unique, rng.permutation([label_of[k] for k in unique]), strict=True))
        null.append(_grouped_cv_accuracy(x, np.array([shuffled[k] for k in g]), g, seed, trees))
    null_accuracy = np.array([hits.mean() for hits in null])
    draws = []
    for _ in range(bootstrap):
        picked = rng.choice(unique, size=len(unique), replace=True)
        draws.append(correct[np.concatenate([by_group[k] for k in picked])].mean())
    low, high = np.quantile(draws, [0.025, 0.975])
    p_value = float((1 + np.sum(null_accuracy >= accuracy)) / (1 + permutations))
    verdict = "leaks: above chance" if p_value < 0.05 else "no evidence of leakage"
    return {
        **result,
        "accuracy": accuracy,
        "ci_low": float(low),
        "ci_high": float(high),
        "chance": float(null_accuracy.mean()),
        "chance_high": float(np.quantile(null_accuracy, 0.95)),
        "p_value": p_value,
        "uniform_chance": 1 / result["activities"],
        "permutations": permutations,
        "verdict": verdict,
    }


LEAKAGE_COLUMNS = [
    "source",
    "app",
    "mute_mode",
    "guard",
    "stimulus_source",
    "window_s",
    "windows",
    "recordings",
    "activities",
    "accuracy",
    "ci_low",
    "ci_high",
    "chance",
    "chance_high",
    "p_value",
    "uniform_chance",
    "permutations",
    "verdict",
]


def session_windows(
    session_dir: str | Path,
    packets_path: str | Path,
    stimulus: Mapping[str, Any],
    window_s: float,
) -> pd.DataFrame:
    """The muted traffic windows of one activity session, labelled with what was played.

    A recording's windows share one ``group`` at every distance, so the leakage test never
    judges a recording by a model that heard it at another distance.
    """

    manifest = evidence.load_manifest(session_dir)
    guard = evidence.driver_keys(manifest)["guard"]
    segments = evidence.mute_segments(read_jsonl(Path(session_dir) / "events.jsonl"))
    windows = window_features(pd.read_parquet(packets_path), segments, window_s)
    keys = session_keys(manifest)
    labels = {
        "source": keys["source"],
        "app": keys["app"],
        "mute_mode": keys["mute_mode"],
        "guard": guard,
        "stimulus": keys["stimulus"],
        "rep": keys["rep"],
        "activity": stimulus["activity"],
        "recording": int(stimulus["recording"]),
        "distance_cm": int(stimulus["distance_cm"]),
        "stimulus_source": stimulus.get("source", "synthetic"),
        "group": f"{stimulus['activity']}{int(stimulus['recording'])}",
        "window_s": float(window_s),
    }
    for column, value in reversed(labels.items()):
        windows.insert(0, column, value)
    return windows


def leakage_table(
    windows: pd.DataFrame, seed: int, bootstrap: int = 1000, permutations: int = 100
) -> pd.DataFrame:
    """One :func:`leakage_test` row per source, app, mute mode and guard (on: the OS-level
    mute, ``reallymuted guard``, muted the app's streams while it was muted)."""
    rows = []
    keys = ["source", "app", "mute_mode", "guard"]
    for (source, app, mode, guard), part in windows.groupby(keys, sort=True):
        result = leakage_test(
            part[WINDOW_FEATURES],
            part.activity,
            part.group,
            seed=seed,
            bootstrap=bootstrap,
            permutations=permutations,
        )
        rows.append(
            {
                "source": source,
                "app": app,
                "mute_mode": mode,
                "guard": guard,
                "stimulus_source": " ".join(sorted(set(part.stimulus_source))),
                "window_s": float(part.window_s.iloc[0]),
                **result,
            }
        )
    return pd.DataFrame(rows, columns=LEAKAGE_COLUMNS)


def leakage_to_files(
    session_dirs: Sequence[str | Path],
    packet_paths: Sequence[str | Path],
    stimuli: Sequence[Mapping[str, Any]],
    window_s: float,
    seed: int,
    bootstrap: int,
    permutations: int,
    outputs: Mapping[str, str | Path],
) -> pd.DataFrame:
    """Rule attack_leakage: every session's windows (``outputs['windows']``) and the test per
    app and mute mode (``outputs['table']``)."""
    from reallymuted.io import write_csv

    parts = [
        session_windows(d, p, s, window_s)
        for d, p, s in zip(session_dirs, packet_paths, stimuli, strict=True)
    ]
    windows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    table = (
        leakage_table(windows, seed, bootstrap, permutations)
        if len(windows)
        else pd.DataFrame(columns=LEAKAGE_COLUMNS)
    )
    log.info("leakage: %d windows from %d sessions", len(windows), len(parts))
    for row in table.itertuples():
        log.info(
            "%s %s: accuracy %.3f [%.3f, %.3f] vs chance %.3f: %s",
            row.app,
            row.mute_mode,
            row.accuracy,
            row.ci_low,
            row.ci_high,
            row.chance,
            row.verdict,
        )
    write_csv(outputs["windows"], windows)
    write_csv(outputs["table"], table)
    return table
