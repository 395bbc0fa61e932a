"""Background-activity classifier: per-minute Webex gain triples -> six activities.

The unit of evidence is one minute of telemetry, the triple (audioMaxGain, audioMeanGain,
audioMinGain). The pipeline is split into independent steps so that any per-minute table of
the same shape (the authors' released gains, source ``reference``; our own captured telemetry,
source ``testbed-profile``) goes through the same code:

1. :func:`parse_gains_file` / :func:`read_gains` turn the authors' ``ParseSourceData/*.txt``
   files into a tidy per-minute table (one row per minute, ``recording_id`` unique per header
   occurrence) and a per-recording table that also counts what was excluded or empty.
2. :func:`windows` cuts n consecutive minutes *within* one recording into samples, so that no
   sample mixes two recordings (the authors concatenated recordings of a class first).
3. :func:`evaluate_protocol` runs the paper's protocol (train on the development set only,
   test on evaluation sets 1 and 2), choosing hyper-parameters on a validation split grouped by
   recording, and also reproduces the authors' leaky random split over overlapping windows.
4. :func:`select_models`, :func:`dataset_sizes` and :func:`claim_values` summarise the results.

Metrics follow the paper's wording: "macro accuracy" is the mean per-class recall (balanced
accuracy) and "average per-class precision" the unweighted mean of per-class precision.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, precision_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from reallymuted.io import DataError, write_csv, write_json

log = logging.getLogger(__name__)

SOURCE = "reference"
GAINS = ("max", "mean", "min")  # the order of the authors' [max_line, mean_line, min_line]
LIST_KEYS = {"Maxs": "max", "Means": "mean", "Mins": "min"}
EVAL_SETS = ("validation_grouped", "validation_random_windows", "eval1", "eval2")
# Tie-break when two models validate equally well: the earlier (simpler) model wins.
SIMPLICITY = ("majority", "logistic", "random_forest", "extra_trees", "gradient_boosting", "mlp")
MINUTE_COLUMNS = [
    "source",
    "split",
    "file",
    "distance_cm",
    "recording_id",
    "video",
    "activity",
    "minute",
    "max",
    "mean",
    "min",
]
METRIC_COLUMNS = [
    "source",
    "window",
    "model",
    "eval_set",
    "macro_accuracy",
    "macro_precision",
    "n_windows",
]

_HEADER = re.compile(r"^(?P<path>\S*\.wav)(?:\s+(?P<note>.*?))?\s*$")
_LIST = re.compile(r"^(?P<key>Maxs|Means|Mins):\s*(?P<body>.*?)\s*$")
_DISTANCE = re.compile(r"(\d+)\s*cm\b")
_NOTE_DISTANCE = re.compile(r"^(\d+)(?:\s*cm)?$")


# -- labels ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivityClass:
    """One activity: short code, readable name, and the video-name substrings that give it."""

    code: str
    name: str
    patterns: tuple[str, ...]


def class_specs(config_classes: Iterable[Mapping[str, Any]]) -> list[ActivityClass]:
    """The ``classifier.classes`` config entries as :class:`ActivityClass` objects, in order."""
    return [ActivityClass(c["code"], c["name"], tuple(c["patterns"])) for c in config_classes]


def label_for(video: str, classes: Sequence[ActivityClass]) -> str | None:
    """The code of the first class whose patterns occur in ``video`` (the authors' if/elif
    chain), or ``None`` when none matches (e.g. ``punk_music``, ``key_board3``)."""
    for spec in classes:
        if any(p in video for p in spec.patterns):
            return spec.code
    return None


# -- parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawRecording:
    """One header occurrence of a gains file and its three per-minute lists."""

    file: str
    line: int
    video: str
    note: str
    max: tuple[int, ...]
    mean: tuple[int, ...]
    min: tuple[int, ...]


def _video_name(path_token: str) -> str:
    """``./youtube_vids/cooking3.mp4.wav`` -> ``cooking3``."""
    name = path_token.rsplit("/", 1)[-1]
    for suffix in (".wav", ".mp4", ".webm", ".mkv"):
        name = name.removesuffix(suffix)
    return name


def _parse_list(path: Path, number: int, key: str, body: str) -> tuple[int, ...]:
    if not body.startswith("["):
        raise DataError(f"{path}:{number}: {key} list does not start with '['")
    if not body.endswith("]"):
        raise DataError(f"{path}:{number}: {key} list is not closed by ']' (truncated line?)")
    inner = body[1:-1].strip()
    if not inner:
        return ()
    values = []
    for token in inner.split(","):
        token = token.strip()
        try:
            values.append(int(token))
        except ValueError:
            raise DataError(
                f"{path}:{number}: {key} list holds {token!r}, not an integer gain"
            ) from None
    return tuple(values)


def parse_gains_file(path: str | Path) -> list[RawRecording]:
    """Read one of the authors' ``ParseSourceData/*.txt`` files.

    Format: a header line naming the played video (``./youtube_vids/x.mp4.wav``, sometimes
    followed by a note such as ``10 cm``), then exactly the lines ``Maxs:[..]``, ``Means:[..]``,
    ``Mins:[..]`` with one integer per minute; blank lines separate records. Anything else — a
    record cut short, an unclosed list, lists of different lengths, a non-integer value — is a
    :class:`DataError` naming the file and line, because a silently skipped record would change
    the dataset without anyone noticing.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    records: list[RawRecording] = []
    number = 0
    while number < len(lines):
        line = lines[number].strip()
        number += 1
        if not line:
            continue
        header = _HEADER.match(line)
        if not header:
            raise DataError(
                f"{path}:{number}: expected a header naming a .wav video, got {line[:60]!r}"
            )
        header_line = number
        lists: dict[str, tuple[int, ...]] = {}
        for key, column in LIST_KEYS.items():
            if number >= len(lines):
                raise DataError(
                    f"{path}:{number}: file ends before the {key} line of the record "
                    f"starting at line {header_line} (truncated file?)"
                )
            text = lines[number].strip()
            number += 1
            match = _LIST.match(text)
            if not match or match["key"] != key:
                raise DataError(
                    f"{path}:{number}: expected the {key} line of the record starting at "
                    f"line {header_line}, got {text[:60]!r}"
                )
            lists[column] = _parse_list(path, number, key, match["body"])
        lengths = {c: len(v) for c, v in lists.items()}
        if len(set(lengths.values())) != 1:
            raise DataError(
                f"{path}:{header_line}: Maxs/Means/Mins lists have different lengths {lengths}"
            )
        records.append(
            RawRecording(
                file=path.stem,
                line=header_line,
                video=_video_name(header["path"]),
                note=header["note"] or "",
                **lists,
            )
        )
    if not records:
        raise DataError(f"{path}: no records (empty file?)")
    return records


def distance_from_name(name: str) -> int | None:
    """``new_data_10cm`` -> 10: the speaker-to-microphone distance of a released file."""
    match = _DISTANCE.search(name)
    return int(match.group(1)) if match else None


def _note_distance(note: str) -> int | None:
    match = _NOTE_DISTANCE.match(note.strip())
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class ParsedGains:
    """The tidy per-minute table and one row per header occurrence (used or not)."""

    minutes: pd.DataFrame
    recordings: pd.DataFrame


def read_gains(
    files: Mapping[str, Sequence[str | Path]],
    classes: Sequence[ActivityClass],
    source: str = SOURCE,
) -> ParsedGains:
    """Parse every file of every split (``{"dev": [paths], "eval1": [...], ...}``).

    Recordings whose video matches no class are excluded (as the authors' parser did) and
    recordings with empty lists contribute no minutes; both are kept in ``recordings`` with a
    ``status`` so that the dataset table can count them.
    """
    minute_frames, recording_rows = [], []
    for split, paths in files.items():
        for path in paths:
            for rec in parse_gains_file(path):
                activity = label_for(rec.video, classes)
                minutes = len(rec.max)
                status = "excluded" if activity is None else ("empty" if minutes == 0 else "used")
                recording_id = f"{rec.file}:L{rec.line}"
                distance = distance_from_name(rec.file)
                note_distance = _note_distance(rec.note)
                if note_distance is not None and note_distance != distance:
                    log.warning(
                        "%s: header note %r says %d cm but the file is the %s cm set; kept in "
                        "the file's split as the authors did",
                        recording_id,
                        rec.note,
                        note_distance,
                        distance,
                    )
                recording_rows.append(
                    {
                        "source": source,
                        "split": split,
                        "file": rec.file,
                        "line": rec.line,
                        "recording_id": recording_id,
                        "video": rec.video,
                        "note": rec.note,
                        "distance_cm": distance,
                        "note_distance_cm": note_distance,
                        "activity": activity or "",
                        "status": status,
                        "minutes": minutes,
                    }
                )
                if status != "used":
                    continue
                minute_frames.append(
                    pd.DataFrame(
                        {
                            "source": source,
                            "split": split,
                            "file": rec.file,
                            "distance_cm": distance,
                            "recording_id": recording_id,
                            "video": rec.video,
                            "activity": activity,
                            "minute": np.arange(minutes),
                            "max": rec.max,
                            "mean": rec.mean,
                            "min": rec.min,
                        }
                    )
                )
    recordings = pd.DataFrame(recording_rows)
    if not minute_frames:
        raise DataError(
            f"no usable minutes in {', '.join(map(str, itertools.chain(*files.values())))}"
        )
    minutes_table = pd.concat(minute_frames, ignore_index=True)[MINUTE_COLUMNS]
    counts = recordings.status.value_counts().to_dict()
    log.info(
        "parsed %d recordings (%s); %d minutes used",
        len(recordings),
        ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
        len(minutes_table),
    )
    return ParsedGains(minutes_table, recordings)


# -- windows ---------------------------------------------------------------------------------


class Windows(NamedTuple):
    """Samples of n consecutive minutes: features, activity codes, recording of each sample."""

    X: np.ndarray  # (samples, 3n): max_1..max_n, mean_1..mean_n, min_1..min_n
    y: np.ndarray  # (samples,) activity codes
    groups: np.ndarray  # (samples,) recording_id: windows of one recording share a group


def windows(minutes: pd.DataFrame, n: int) -> Windows:
    """All windows of ``n`` consecutive minutes (stride 1) that stay inside one recording.

    The authors concatenated every recording of a class before windowing, so some of their
    samples straddled two recordings; here a recording shorter than ``n`` gives no sample.
    A window's group (what no split may cut) is its ``recording_id``, or its ``group`` when
    the table has that column: captured telemetry has one series per session, and the
    sessions that played one source recording (at several distances) form one group
    (:mod:`reallymuted.analysis.attack`).
    """
    if n < 1:
        raise ValueError(f"window length must be >= 1, got {n}")
    group_column = "group" if "group" in minutes.columns else "recording_id"
    xs, ys, gs = [], [], []
    for _recording_id, rec in minutes.groupby("recording_id", sort=False):
        rec = rec.sort_values("minute")
        if len(rec) < n:
            continue
        gains = rec[list(GAINS)].to_numpy(dtype=np.float64)  # (minutes, 3)
        view = np.lib.stride_tricks.sliding_window_view(gains, n, axis=0)  # (w, 3, n)
        xs.append(view.reshape(len(view), 3 * n))
        ys.append(np.full(len(view), rec.activity.iloc[0], dtype=object))
        gs.append(np.full(len(view), rec[group_column].iloc[0], dtype=object))
    if not xs:
        return Windows(np.empty((0, 3 * n)), np.empty(0, dtype=object), np.empty(0, dtype=object))
    return Windows(np.concatenate(xs), np.concatenate(ys), np.concatenate(gs))


# -- splits ----------------------------------------------------------------------------------


def grouped_split(
    y: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out about ``fraction`` of each class's recordings for model selection.

    Every window of a recording falls on the same side, so validation measures how well the
    model generalises to a recording it has not seen (as the evaluation sets demand). Per
    class, ``max(1, round(fraction * recordings))`` recordings are drawn (seeded) when the class
    has at least two, so that every such class is both trained on and validated — a plain
    StratifiedGroupKFold fold can miss a class with only two recordings (classical music).
    """
    rng = np.random.default_rng(seed)
    held_out: set[Any] = set()
    for activity in sorted(set(y)):
        recordings = sorted(set(groups[y == activity]))
        if len(recordings) < 2:
            log.warning("only one recording of %s: it stays in training", activity)
            continue
        k = min(len(recordings) - 1, max(1, round(fraction * len(recordings))))
        held_out.update(rng.choice(recordings, size=k, replace=False).tolist())
    is_val = np.array([g in held_out for g in groups], dtype=bool)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def random_window_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The authors' split: a stratified random share of the (overlapping) windows.

    Windows that share minutes with a training window land in validation, so this split
    measures memory of a recording rather than generalisation; kept only for comparison.
    A small set (captured telemetry) still gets at least one window of each class held out:
    the share is rounded up as scikit-learn rounds it, and raised to the number of classes.
    """
    index = np.arange(len(y))
    size = max(math.ceil(fraction * len(y)), len(set(y)))
    train, val = train_test_split(index, test_size=size, stratify=y, random_state=seed)
    return np.sort(train), np.sort(val)


# -- models ----------------------------------------------------------------------------------


def make_model(name: str, params: Mapping[str, Any], seed: int) -> BaseEstimator:
    """A fresh scikit-learn model; ``params`` go to the classifier (not the scaler).

    Single-threaded on purpose: Snakemake runs one job per window in parallel instead.
    """
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    if name == "majority":
        return DummyClassifier(strategy="most_frequent", **params)
    if name == "random_forest":
        return RandomForestClassifier(
            **{"n_estimators": 100, "random_state": seed, "n_jobs": 1, **params}
        )
    if name == "extra_trees":
        return ExtraTreesClassifier(
            **{"n_estimators": 100, "random_state": seed, "n_jobs": 1, **params}
        )
    if name == "gradient_boosting":
        return HistGradientBoostingClassifier(**{"random_state": seed, **params})
    if name == "logistic":
        model = LogisticRegression(**{"max_iter": 2000, **params})
        return Pipeline([("scale", StandardScaler()), ("model", model)])
    if name == "mlp":
        model = MLPClassifier(**{"max_iter": 500, "random_state": seed, **params})
        return Pipeline([("scale", StandardScaler()), ("model", model)])
    raise ValueError(f"unknown model {name!r}; known: {', '.join(SIMPLICITY)}")


def fit_model(
    name: str,
    params: Mapping[str, Any],
    seed: int,
    X: np.ndarray,
    y: np.ndarray,
    balance_classes: bool = True,
) -> BaseEstimator:
    """Fit a model; with ``balance_classes`` each class weighs the same in training, matching
    the macro metrics (the majority baseline stays a true majority vote)."""
    model = make_model(name, params, seed)
    kwargs: dict[str, Any] = {}
    if balance_classes and name != "majority":
        weight = compute_sample_weight("balanced", y)
        key = "model__sample_weight" if isinstance(model, Pipeline) else "sample_weight"
        kwargs[key] = weight
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the grid decides, not the warning
        model.fit(X, y, **kwargs)
    return model


def param_grid(grid: Mapping[str, Sequence[Any]] | None) -> list[dict[str, Any]]:
    """All combinations of a ``{param: [values]}`` grid, in a fixed order (first = default)."""
    if not grid:
        return [{}]
    keys = sorted(grid)
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))
    ]


# -- metrics ---------------------------------------------------------------------------------


def macro_accuracy(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (balanced accuracy)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    recalls = [float(np.mean(y_pred[y_true == c] == c)) for c in np.unique(y_true)]
    return float(np.mean(recalls))


def macro_precision(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    """Unweighted mean of per-class precision over every class that occurs in ``y_true`` or
    ``y_pred``; a class never predicted has precision 0 (``zero_division=0``)."""
    return float(precision_score(y_true, y_pred, average="macro", zero_division=0))


def weighted_precision(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    """Per-class precision weighted by class support: what the authors' code printed."""
    return float(precision_score(y_true, y_pred, average="weighted", zero_division=0))


def confusion_rows(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str], **keys: Any
) -> list[dict[str, Any]]:
    """Tidy row-normalised confusion matrix; rows of classes absent from ``y_true`` are left
    out (their shares would be 0/0)."""
    counts = confusion_matrix(y_true, y_pred, labels=list(labels))
    rows = []
    for i, true in enumerate(labels):
        total = int(counts[i].sum())
        if total == 0:
            continue
        for j, predicted in enumerate(labels):
            rows.append(
                {
                    **keys,
                    "true_activity": true,
                    "predicted_activity": predicted,
                    "count": int(counts[i, j]),
                    "share": counts[i, j] / total,
                }
            )
    return rows


# -- protocol --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProtocolResult:
    """Everything one window length gives: metrics, confusion matrices and the grid search."""

    metrics: pd.DataFrame
    confusion: pd.DataFrame
    grid: pd.DataFrame


def protocol_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`evaluate_protocol` a ``classifier`` config section sets
    (the reference classifier's and the attack's, alike)."""
    return {
        "grids": settings.get("grids"),
        "validation_fraction": settings["validation_fraction"],
        "random_validation_fraction": settings["random_validation_fraction"],
        "balance_classes": settings["balance_classes"],
    }


def evaluate_protocol(
    dev_minutes: pd.DataFrame,
    eval_minutes: Mapping[str, pd.DataFrame],
    n: int,
    models: Sequence[str],
    seed: int,
    grids: Mapping[str, Mapping[str, Sequence[Any]]] | None = None,
    validation_fraction: float = 0.25,
    random_validation_fraction: float = 0.2,
    balance_classes: bool = True,
    labels: Sequence[str] | None = None,
    source: str = SOURCE,
) -> ProtocolResult:
    """The paper's protocol for one window length ``n``.

    For each model: pick hyper-parameters on a recording-grouped validation split of the
    development set (``validation_grouped``); with those, also train/test on the authors'
    random 80/20 split of overlapping windows (``validation_random_windows``, leaky by
    design); finally refit on the whole development set and test on each evaluation set
    (``eval_minutes``, e.g. ``{"eval1": ..., "eval2": ...}``). Nothing of an evaluation set is
    seen before its test.
    """
    grids = grids or {}
    dev = windows(dev_minutes, n)
    if len(dev.y) == 0:
        raise ValueError(f"no development windows of {n} minutes")
    evals = {name: windows(frame, n) for name, frame in eval_minutes.items()}
    if labels is None:
        labels = list(dict.fromkeys(dev.y))
    labels = [c for c in labels if c in set(dev.y) | {v for w in evals.values() for v in w.y}]
    train, val = grouped_split(dev.y, dev.groups, validation_fraction, seed)
    rtrain, rval = random_window_split(dev.y, random_validation_fraction, seed)
    log.info(
        "n=%d: %d dev windows (%d recordings; grouped split %d/%d windows), %s",
        n,
        len(dev.y),
        len(set(dev.groups)),
        len(train),
        len(val),
        ", ".join(f"{k} {len(w.y)} windows" for k, w in evals.items()),
    )
    metric_rows, confusion, grid_rows = [], [], []

    def record(model: str, eval_set: str, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        keys = {"source": source, "window": n, "model": model, "eval_set": eval_set}
        metric_rows.append(
            {
                **keys,
                "macro_accuracy": macro_accuracy(y_true, y_pred),
                "macro_precision": macro_precision(y_true, y_pred),
                "n_windows": len(y_true),
                "weighted_precision": weighted_precision(y_true, y_pred),
            }
        )
        confusion.extend(confusion_rows(y_true, y_pred, labels, **keys))

    for model in models:
        tried = []  # (params, validation predictions) per grid point, in grid order
        for params in param_grid(grids.get(model)):
            fitted = fit_model(model, params, seed, dev.X[train], dev.y[train], balance_classes)
            tried.append((params, fitted.predict(dev.X[val])))
        scores = [macro_accuracy(dev.y[val], pred) for _, pred in tried]
        chosen = int(np.argmax(scores))  # ties keep the earlier grid point
        for i, (params, pred) in enumerate(tried):
            grid_rows.append(
                {
                    "source": source,
                    "window": n,
                    "model": model,
                    "params": json.dumps(params, sort_keys=True),
                    "macro_accuracy": scores[i],
                    "macro_precision": macro_precision(dev.y[val], pred),
                    "selected": i == chosen,
                }
            )
        params, pred = tried[chosen]
        record(model, "validation_grouped", dev.y[val], pred)
        fitted = fit_model(model, params, seed, dev.X[rtrain], dev.y[rtrain], balance_classes)
        record(model, "validation_random_windows", dev.y[rval], fitted.predict(dev.X[rval]))
        fitted = fit_model(model, params, seed, dev.X, dev.y, balance_classes)
        for name, data in evals.items():
            if len(data.y):
                record(model, name, data.y, fitted.predict(data.X))
        log.info("n=%d %s: params %s", n, model, json.dumps(params, sort_keys=True))
    metrics = pd.DataFrame(metric_rows)
    return ProtocolResult(metrics, pd.DataFrame(confusion), pd.DataFrame(grid_rows))


# -- summaries -------------------------------------------------------------------------------


def select_models(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per source and window, the model with the best ``validation_grouped`` macro accuracy;
    ties go to the simpler model (:data:`SIMPLICITY`). Evaluation sets play no part."""
    val = metrics[metrics.eval_set == "validation_grouped"].copy()
    val["rank"] = val.model.map({m: i for i, m in enumerate(SIMPLICITY)})
    val["score"] = val.macro_accuracy.round(12)
    val = val.sort_values(
        ["source", "window", "score", "rank"], ascending=[True, True, False, True]
    )
    best = val.groupby(["source", "window"], sort=True).head(1)
    return best[["source", "window", "model", "macro_accuracy"]].reset_index(drop=True)


def dataset_sizes(
    minutes: pd.DataFrame,
    recordings: pd.DataFrame,
    window_lengths: Sequence[int],
    classes: Sequence[ActivityClass],
) -> pd.DataFrame:
    """Table 3 analogue: recordings, minutes and windows per n, per activity and split.

    Two extra rows per split say what the authors' label mapping dropped (``(excluded)``,
    with the video names) and which records had empty lists (``(empty lists)``).
    """
    names = {c.code: c.name for c in classes}
    order = {c.code: i for i, c in enumerate(classes)}
    rows = []
    for split, recs in recordings.groupby("split", sort=False):
        used = minutes[minutes.split == split]
        files = " ".join(dict.fromkeys(recs.file))
        base = {"source": recs.source.iloc[0], "split": split, "files": files}
        activities = sorted(set(used.activity), key=lambda a: order.get(a, len(order)))
        for activity in [*activities, "(all classes)"]:
            part = used if activity == "(all classes)" else used[used.activity == activity]
            row = {
                **base,
                "activity": activity,
                "activity_name": names.get(activity, "all six activities"),
                "recordings": part.recording_id.nunique(),
                "minutes": len(part),
            }
            for n in window_lengths:
                row[f"windows_n{n}"] = len(windows(part, n).y)
            rows.append({**row, "note": ""})
        for status, label, why in (
            ("excluded", "(excluded)", "video name matches no class; dropped as by the authors"),
            ("empty", "(empty lists)", "Maxs/Means/Mins lists empty; no minutes"),
        ):
            part = recs[recs.status == status]
            videos = part.video.value_counts().sort_index()
            listing = ", ".join(f"{v} x{k}" for v, k in videos.items())
            rows.append(
                {
                    **base,
                    "activity": label,
                    "activity_name": "",
                    "recordings": len(part),
                    "minutes": int(part.minutes.sum()),
                    **{f"windows_n{n}": None for n in window_lengths},
                    "note": why + (f": {listing}" if listing else ""),
                }
            )
    table = pd.DataFrame(rows)
    for n in window_lengths:
        table[f"windows_n{n}"] = table[f"windows_n{n}"].astype("Int64")
    return table


def claim_values(
    metrics: pd.DataFrame, confusion: pd.DataFrame, recordings: pd.DataFrame
) -> dict[str, Any]:
    """The named numbers the claims table sets beside the paper's C1–C6 (one source)."""
    selected = select_models(metrics).set_index("window").model
    used = recordings[recordings.status == "used"]
    values: dict[str, Any] = {
        "classes": list(dict.fromkeys(confusion.true_activity)),
        "n_classes": int(confusion.true_activity.nunique()),
        # the windows this run evaluated (config classifier.windows): a claim about another
        # window is not measured here, not missing
        "windows": sorted(int(n) for n in selected.index),
        "recordings_used": len(used),
        "recordings_excluded": int((recordings.status == "excluded").sum()),
        "recordings_empty": int((recordings.status == "empty").sum()),
        "recordings_note_distance_differs": int(
            (
                recordings.note_distance_cm.notna()
                & (recordings.note_distance_cm != recordings.distance_cm)
            ).sum()
        ),
    }
    for split in ("dev", "eval1", "eval2"):
        values[f"{split}_recordings"] = int((used.split == split).sum())
    for n, model in selected.items():
        m = metrics[(metrics.window == n) & (metrics.model == model)].set_index("eval_set")
        values[f"selected_model_n{n}"] = model
        values[f"validation_grouped_accuracy_n{n}"] = m.macro_accuracy["validation_grouped"]
        values[f"validation_grouped_precision_n{n}"] = m.macro_precision["validation_grouped"]
        random_split = m.loc["validation_random_windows"]
        values[f"validation_random_accuracy_n{n}"] = random_split.macro_accuracy
        values[f"validation_random_precision_n{n}"] = random_split.macro_precision
        if "weighted_precision" in m.columns:
            values[f"validation_random_weighted_precision_n{n}"] = random_split.weighted_precision
        for eval_set in ("eval1", "eval2"):
            if eval_set in m.index:
                values[f"{eval_set}_accuracy_n{n}"] = m.macro_accuracy[eval_set]
                values[f"{eval_set}_precision_n{n}"] = m.macro_precision[eval_set]
                values[f"{eval_set}_windows_n{n}"] = int(m.n_windows[eval_set])
        if {"eval1", "eval2"} <= set(m.index):
            e = m.loc[["eval1", "eval2"]]
            values[f"eval_weighted_accuracy_n{n}"] = float(
                np.average(e.macro_accuracy, weights=e.n_windows)
            )
            hardest, confused = hardest_class(confusion, n, model)
            values[f"hardest_class_n{n}"] = hardest
            values[f"hardest_class_confused_with_n{n}"] = confused
            for eval_set in ("eval1", "eval2"):
                values[f"{eval_set}_largest_confusion_n{n}"] = largest_confusion(
                    confusion, n, model, eval_set
                )
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}


def largest_confusion(confusion: pd.DataFrame, n: int, model: str, eval_set: str) -> str:
    """The biggest off-diagonal cell of one row-normalised confusion matrix, as text."""
    part = confusion[
        (confusion.window == n)
        & (confusion.model == model)
        & (confusion.eval_set == eval_set)
        & (confusion.true_activity != confusion.predicted_activity)
    ]
    if part.empty:
        return "none"
    top = part.sort_values(["share", "true_activity"], ascending=[False, True], kind="stable").iloc[
        0
    ]
    return f"{top.true_activity} predicted as {top.predicted_activity} in {top.share:.0%}"


def hardest_class(
    confusion: pd.DataFrame, n: int, model: str, eval_sets: Sequence[str] = ("eval1", "eval2")
) -> tuple[str, str]:
    """The activity with the lowest recall averaged over ``eval_sets``, and the activity it is
    most often mistaken for (largest mean off-diagonal share)."""
    part = confusion[
        (confusion.window == n) & (confusion.model == model) & confusion.eval_set.isin(eval_sets)
    ]
    shares = part.groupby(["true_activity", "predicted_activity"], sort=False).share.mean()
    recall = {t: shares[(t, t)] for t in dict.fromkeys(part.true_activity)}
    hardest = min(recall, key=lambda t: (recall[t], t))
    wrong = shares[hardest].drop(hardest)
    return hardest, str(wrong.sort_values(ascending=False, kind="stable").index[0])


# -- entry points for the workflow's scripts -------------------------------------------------


def parse_to_files(
    files: Mapping[str, Sequence[str | Path]],
    config_classes: Iterable[Mapping[str, Any]],
    out: Mapping[str, str | Path],
    source: str = SOURCE,
) -> None:
    """Rule classifier_parse: gains files per split -> ``minutes`` and ``recordings`` CSVs."""
    parsed = read_gains(files, class_specs(config_classes), source)
    write_csv(out["minutes"], parsed.minutes)
    write_csv(out["recordings"], parsed.recordings)


def read_minutes(path: str | Path) -> pd.DataFrame:
    """Read a per-minute table written by :func:`parse_to_files` (or any same-shape table)."""
    frame = pd.read_csv(path, dtype={"recording_id": str, "activity": str, "split": str})
    missing = [c for c in MINUTE_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def read_recordings(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"activity": str, "note": str}, keep_default_na=False).assign(
        note_distance_cm=lambda f: pd.to_numeric(f.note_distance_cm, errors="coerce"),
        distance_cm=lambda f: pd.to_numeric(f.distance_cm, errors="coerce"),
    )


def window_to_files(
    minutes_path: str | Path,
    n: int,
    settings: Mapping[str, Any],
    out: Mapping[str, str | Path],
    labels: Sequence[str] | None = None,
    threads: int = 1,
) -> None:
    """Rule classifier_window: the protocol for one window length on a per-minute table whose
    ``split`` column says ``dev`` / ``eval1`` / ``eval2``.

    ``settings`` holds ``models``, ``seed``, ``grids``, ``validation_fraction``,
    ``random_validation_fraction`` and ``balance_classes`` (the ``classifier`` config keys);
    ``labels`` are the class codes in display order. Native thread pools are capped at
    ``threads`` because Snakemake already runs one job per window in parallel.
    """
    from threadpoolctl import threadpool_limits

    minutes = read_minutes(minutes_path)
    source = str(minutes.source.iloc[0])
    eval_sets = [s for s in dict.fromkeys(minutes.split) if s != "dev"]
    with threadpool_limits(limits=threads):
        result = evaluate_protocol(
            minutes[minutes.split == "dev"],
            {s: minutes[minutes.split == s] for s in eval_sets},
            n,
            settings["models"],
            settings["seed"],
            **protocol_settings(settings),
            labels=labels,
            source=source,
        )
    write_csv(out["metrics"], result.metrics)
    write_csv(out["confusion"], result.confusion)
    write_csv(out["grid"], result.grid)


def tables_to_files(
    metrics: Sequence[str | Path],
    confusion: Sequence[str | Path],
    grid: Sequence[str | Path],
    recordings: str | Path,
    out: Mapping[str, str | Path],
) -> None:
    """Rule classifier_tables: per-window results -> the study's tables and named values."""
    all_metrics = pd.concat([pd.read_csv(p) for p in metrics], ignore_index=True)
    all_confusion = pd.concat([pd.read_csv(p) for p in confusion], ignore_index=True)
    all_grid = pd.concat([pd.read_csv(p) for p in grid], ignore_index=True)
    sort = ["source", "window", "model", "eval_set"]
    all_metrics = all_metrics.sort_values(sort, kind="stable")
    all_confusion = all_confusion.sort_values(sort, kind="stable")
    values = claim_values(all_metrics, all_confusion, read_recordings(recordings))
    write_csv(out["metrics"], all_metrics[METRIC_COLUMNS])
    write_csv(out["confusion"], all_confusion)
    write_csv(out["grid"], all_grid)
    write_json(out["values"], {"source": str(all_metrics.source.iloc[0]), **values})


def dataset_sizes_to_file(
    minutes_path: str | Path,
    recordings_path: str | Path,
    window_lengths: Sequence[int],
    config_classes: Iterable[Mapping[str, Any]],
    out: str | Path,
) -> None:
    """Rule classifier_dataset_sizes: the Table 3 analogue."""
    table = dataset_sizes(
        read_minutes(minutes_path),
        read_recordings(recordings_path),
        window_lengths,
        class_specs(config_classes),
    )
    write_csv(out, table)
