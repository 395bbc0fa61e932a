"""Decoding one record: its gzip+base64 payload or its payload JSON, into one row per interval."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from reallymuted.analysis.telemetry.records import (
    LEVELS,
    MAX_PAYLOAD_BYTES,
    PROBLEM_COLUMNS,
    ROW_COLUMNS,
    TELEMETRY_TYPE,
    Problem,
    Record,
    RecordError,
)

log = logging.getLogger(__name__)

_PLAIN_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
# the authors' redaction placeholders; not when quoted (then they are a legal string value)
_REDACTED_OBJECT = re.compile(r"\{[ \t\r\n]*(?<!\")\[redacted\](?!\")[ \t\r\n]*\}", re.IGNORECASE)
_REDACTED = re.compile(r"(?<!\")\[redacted\](?!\")", re.IGNORECASE)


def _entry_type(entry: Any) -> Any:
    return entry.get("t") if isinstance(entry, dict) else None


def _record_payload(record: Record) -> tuple[dict[str, Any], int]:
    """The payload dict of a found record and the redaction placeholders replaced in it."""
    if record.kind == "broken":
        raise RecordError(str(record.content))
    if record.kind == "payload":
        return record.content, record.redactions
    if record.kind == "blob":
        payload, redactions = decode_gzipb64(record.content)
        return payload, redactions + record.redactions
    entry = record.content
    if not isinstance(entry, dict):
        raise RecordError(f"telemetry entry is a {type(entry).__name__}, not an object")
    value = entry.get("v")
    if isinstance(value, str):  # some serialisers send the inner object JSON-encoded again
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(value)
    blob = value.get("gzipb64data") if isinstance(value, dict) else None
    if not isinstance(blob, str):
        raise RecordError("entry has no v.gzipb64data string")
    payload, redactions = decode_gzipb64(blob)
    return payload, redactions + record.redactions


def decode_gzipb64(blob: str | bytes) -> tuple[dict[str, Any], int]:
    """base64 → gzip → JSON payload; returns it with the number of redaction placeholders.

    Raises :class:`RecordError` saying which layer is broken (base64, gzip, JSON).
    """
    text = blob.decode("ascii", "replace") if isinstance(blob, bytes) else blob
    if not _PLAIN_BASE64.fullmatch(text):  # undo \/, %2B-style and MIME-style line breaks
        text = text.replace("\\/", "/")
        for escaped, char in (("%2B", "+"), ("%2F", "/"), ("%3D", "=")):
            text = text.replace(escaped, char).replace(escaped.lower(), char)
        text = "".join(text.split())
    altchars = b"-_" if ("-" in text or "_" in text) else None
    try:
        raw = base64.b64decode(text, altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as exc:
        hint = "; the blob looks cut short" if len(text) % 4 else ""
        raise RecordError(f"bad base64 ({exc}; {len(text)} characters{hint})") from None
    inflater = zlib.decompressobj(wbits=31)  # gzip wrapper: header, CRC and length checked
    try:
        data = inflater.decompress(raw, MAX_PAYLOAD_BYTES)
    except zlib.error as exc:
        kind = "not gzip" if not raw.startswith(b"\x1f\x8b") else "corrupt gzip"
        raise RecordError(f"{kind} ({exc}; {len(raw)} bytes)") from None
    if inflater.unconsumed_tail:
        raise RecordError(f"payload larger than {MAX_PAYLOAD_BYTES} bytes once inflated")
    if not inflater.eof:
        raise RecordError(
            f"truncated gzip (stream ends after {len(raw)} bytes without its end marker)"
        )
    return parse_payload_json(data.decode("utf-8", "replace"))


def parse_payload_json(text: str) -> tuple[dict[str, Any], int]:
    """Parse payload JSON; bare ``[redacted]`` placeholders (the authors') are read as null."""
    try:
        payload = json.loads(text)
        redactions = 0
    except RecursionError:
        raise RecordError("payload is not JSON (nested too deeply)") from None
    except json.JSONDecodeError as exc:
        cleaned, redactions = replace_redactions(text)
        if not redactions:
            raise RecordError(f"payload is not JSON ({exc})") from None
        try:
            payload = json.loads(cleaned)
        except (json.JSONDecodeError, RecursionError) as exc2:
            raise RecordError(f"payload is not JSON ({exc2})") from None
    if not isinstance(payload, dict):
        raise RecordError(f"payload is a JSON {type(payload).__name__}, not an object")
    return payload, redactions


def replace_redactions(text: str) -> tuple[str, int]:
    """``{ [redacted] }`` → ``{}``, other ``[redacted]`` → ``null``, keeping every offset.

    Replacements are padded with spaces to the placeholder's length, so a parser position in
    the cleaned text is the same position in the original (and so is the line).
    """
    text, objects = _REDACTED_OBJECT.subn(
        lambda m: "{" + re.sub(r"[^\n]", " ", m.group()[1:-1]) + "}", text
    )
    text, values = _REDACTED.subn(lambda m: "null".ljust(len(m.group())), text)
    return text, objects + values


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def printable(text: str) -> str:
    """Text that any writer accepts: lone surrogates (from undecodable bytes) become U+FFFD."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def payload_rows(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per interval of a payload; :class:`RecordError` if any interval is unusable.

    A record with one bad interval yields no rows at all: a partial record would silently
    change the per-minute series the classifier reads.
    """
    event = payload.get("event")
    if not isinstance(event, dict):
        raise RecordError("payload has no event object")
    intervals = event.get("intervals")
    if not isinstance(intervals, list) or not intervals:
        raise RecordError("payload has no intervals (event.intervals missing or empty)")
    timestamp = record_timestamp(payload)
    rows = []
    for k, interval in enumerate(intervals):
        where = f"interval {k}"
        if not isinstance(interval, dict):
            raise RecordError(f"{where} is not an object")
        number = interval.get("intervalNumber")
        if isinstance(number, int) and not isinstance(number, bool):
            where += f" (intervalNumber {number})"
        else:
            number = None
        transmit = interval.get("audioTransmit")
        first = transmit[0] if isinstance(transmit, list) and transmit else None
        levels = first.get("levels") if isinstance(first, dict) else None
        if not isinstance(levels, dict) or not levels:
            raise RecordError(f"{where}: no audioTransmit[0].levels")
        row: dict[str, Any] = {"record_timestamp": timestamp, "interval": number}
        for key, column in LEVELS.items():
            if key not in levels:
                raise RecordError(f"{where}: levels have no {key}")
            if not _is_number(levels[key]):
                raise RecordError(f"{where}: {key} is not numeric ({_short(levels[key])})")
            row[column] = levels[key]
        packets = first.get("captureHardwareProvidedAudioPacketsPerSecond")
        row["capture_packets_per_second"] = packets if _is_number(packets) else None
        rows.append(row)
    return rows


def record_timestamp(payload: dict[str, Any]) -> str | None:
    """When the record's measurement started: ``event.sourceMetadata.startTime``.

    Falls back to ``originTime.sent`` (when the client sent it); both are UTC ISO strings and
    are equal in the authors' record.
    """
    event = payload.get("event")
    meta = event.get("sourceMetadata") if isinstance(event, dict) else None
    origin = payload.get("originTime")
    for value in (
        meta.get("startTime") if isinstance(meta, dict) else None,
        origin.get("sent") if isinstance(origin, dict) else None,
    ):
        if isinstance(value, str) and value:
            return printable(value)
    return None


@dataclass
class DecodeReport:
    """Rows and problems of every record seen so far, with the counts of the summary."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: int = 0
    records_found: int = 0
    records_decoded: int = 0
    ignored_entries: int = 0  # wrapper entries of another telemetry type than wmequality

    @property
    def intervals(self) -> int:
        return len(self.rows)

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def add(self, record: Record) -> None:
        """Decode one record and account for it (rows, or a problem; never nothing)."""
        if record.kind == "notice":
            self._problem(record, "warning", str(record.content))
            return
        if record.kind == "entry" and _entry_type(record.content) not in (None, TELEMETRY_TYPE):
            self.ignored_entries += 1
            return
        self.records_found += 1
        try:
            payload, redactions = _record_payload(record)
            rows = payload_rows(payload)
        except RecordError as exc:
            self._problem(record, "error", f"{exc}{record.note}")
            return
        if redactions:
            self._problem(
                record,
                "warning",
                f"redaction placeholders replaced ({redactions} [redacted] read as null or {{}})",
            )
        self.records_decoded += 1
        for row in rows:
            self.rows.append(
                {"source_file": printable(record.source_file), "line": record.line}
                | {"record": record.record}
                | row
            )

    def _problem(self, record: Record, severity: Literal["warning", "error"], reason: str) -> None:
        self.problems.append(
            Problem(
                printable(record.source_file),
                record.line,
                record.record,
                severity,
                printable(reason),
            )
        )

    def table(self) -> pd.DataFrame:
        """One row per decoded interval (columns :data:`ROW_COLUMNS`)."""
        frame = pd.DataFrame(self.rows, columns=ROW_COLUMNS)
        frame["line"] = frame["line"].astype("int64")
        for column in ["record", "interval", *LEVELS.values(), "capture_packets_per_second"]:
            frame[column] = _numeric_column(frame[column])
        return frame

    def problems_table(self) -> pd.DataFrame:
        frame = pd.DataFrame(
            [vars(p) for p in self.problems], columns=PROBLEM_COLUMNS, dtype=object
        )
        frame["line"] = frame["line"].astype("int64")
        frame["record"] = frame["record"].astype("Int64")
        return frame

    def summary(self, limit: int = 20) -> str:
        """What a person needs to see: counts, then each error and warning with file:line."""
        lines = [
            f"{self.files} file(s): {self.records_found} record(s) found, "
            f"{self.records_decoded} decoded, {self.intervals} interval(s), "
            f"{len(self.warnings)} warning(s), {len(self.errors)} error(s)"
        ]
        if self.ignored_entries:
            lines.append(
                f"  {self.ignored_entries} wrapper entr"
                f"{'y' if self.ignored_entries == 1 else 'ies'} of another telemetry type than "
                f"{TELEMETRY_TYPE} ignored"
            )
        for severity, problems in (("error", self.errors), ("warning", self.warnings)):
            for problem in problems[:limit]:
                lines.append(f"  {severity}: {problem.where()}: {problem.reason}")
            if len(problems) > limit:
                lines.append(f"  … and {len(problems) - limit} more {severity}(s)")
        return "\n".join(lines)


def _numeric_column(column: pd.Series) -> pd.Series:
    """Whole numbers as (nullable) integers, so the CSV shows ``51``, not ``51.0``."""
    values = pd.to_numeric(column, errors="raise").astype("float64")
    present = values.dropna()
    return values.astype("Int64") if (present == present.round()).all() else values
