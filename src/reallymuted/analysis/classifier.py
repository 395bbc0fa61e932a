"""Background-activity classifier: per-minute Webex gain triples -> six activities.

The unit of evidence is one minute of telemetry, the triple (audioMaxGain, audioMeanGain,
audioMinGain). The pipeline is split into independent steps so that any per-minute table of
the same shape (the authors' released gains, source ``reference``; our own captured telemetry,
source ``testbed-profile``) goes through the same code:

1. :func:`parse_gains_file` / :func:`read_gains` turn the authors' ``ParseSourceData/*.txt``
   files into a tidy per-minute table (one row per minute, ``recording_id`` unique per header
   occurrence) and a per-recording table that also counts what was excluded or empty.
2. :func:`windows` cuts n consecutive minutes *within* one recording into samples, so that no
   sample mixes two recordings (the authors concatenated recordings of a class first), and
   :func:`grouped_split` holds out whole recordings for model selection.
3. :func:`reallymuted.analysis.classifier_training.evaluate_protocol` runs the paper's protocol
   (train on the development set only, test on evaluation sets 1 and 2), choosing
   hyper-parameters on a validation split grouped by recording, and also reproduces the
   authors' leaky random split over overlapping windows.
4. :mod:`reallymuted.analysis.classifier_summaries` summarises the results (the selected model
   per window, dataset sizes, the claims' values).

This module and the summaries need no scikit-learn: only the jobs that train import it
(:mod:`~reallymuted.analysis.classifier_training`), so that the others start in a fraction of
the time.

Metrics follow the paper's wording: "macro accuracy" is the mean per-class recall (balanced
accuracy) and "average per-class precision" the unweighted mean of per-class precision.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from reallymuted.io import DataError, write_csv

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
