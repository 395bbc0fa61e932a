"""What the decoder finds: records, problems, and the report of a decode (one row per
interval)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)

SOURCE = "reference"
TELEMETRY_TYPE = "wmequality"
# payload level key -> output column, in the order the issue lists them
LEVELS = {
    "audioMaxGain": "audio_max_gain",
    "audioMeanGain": "audio_mean_gain",
    "audioMinGain": "audio_min_gain",
    "audioMaxVolume": "audio_max_volume",
    "audioMeanVolume": "audio_mean_volume",
    "audioMinVolume": "audio_min_volume",
}
GAIN_COLUMNS = list(LEVELS.values())[:3]
VOLUME_COLUMNS = list(LEVELS.values())[3:]
ROW_COLUMNS = [
    "source_file",
    "line",
    "record",
    "record_timestamp",
    "interval",
    *LEVELS.values(),
    "capture_packets_per_second",
]
PROBLEM_COLUMNS = ["source_file", "line", "record", "severity", "reason"]
# the only volume the authors' record shows (T1: "constant 27369"); the encoder's default
DEFAULT_VOLUME = 27369
# a decompressed payload is a few kB; refuse to inflate a corrupt or hostile blob without bound
MAX_PAYLOAD_BYTES = 64 << 20
MAX_BODY_BYTES = 1 << 30
MAX_ESCAPE_DEPTH = 4
_INITIAL_WINDOW = 1024  # bytes; a window also reaches at least to its line's end


class RecordError(ValueError):
    """One record cannot be decoded; the message is the reason shown to the user."""


@dataclass(frozen=True)
class Record:
    """One telemetry record found in a file, not yet decoded.

    ``kind`` says what was found: a wrapper ``entry`` (``content`` is the entry dict), a bare
    decoded ``payload`` (dict), a loose base64 gzip ``blob`` (str), a ``broken`` record whose
    JSON could not be read (``content`` is the reason), or a ``notice`` that is no record but
    worth a warning (e.g. a malformed chunked HTTP body).
    """

    source_file: str
    line: int  # 1-based line where the record starts
    record: int | None  # index in the wrapper's telemetrics list; None outside a wrapper
    kind: Literal["entry", "payload", "blob", "broken", "notice"]
    content: Any
    redactions: int = 0  # placeholders replaced inside this record's text
    note: str = ""


@dataclass(frozen=True)
class Problem:
    source_file: str
    line: int
    record: int | None
    severity: Literal["warning", "error"]
    reason: str

    def where(self) -> str:
        entry = "" if self.record is None else f" (telemetrics[{self.record}])"
        return f"{self.source_file}:{self.line}{entry}"
