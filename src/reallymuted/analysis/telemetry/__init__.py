"""Webex ``wmequality`` telemetry: find records in any text, decode them to a tidy table.

Webex posts media-quality telemetry about once a minute, also while the user is muted (paper
claim T1). The outer JSON is ``{"telemetrics": [{"t": "wmequality", "v": {"gzipb64data":
"H4sI…"}}, …]}``; ``gzipb64data`` is base64 of a gzip of the *payload* JSON, whose
``event.intervals[k].audioTransmit[0].levels`` carries the microphone gains and volumes of one
interval. This module turns such records into one row per interval.

Researchers hold these records in many shapes: the authors released one decoded payload
(pretty-printed, with bare ``[redacted]`` tokens, so not strict JSON); a proxy writes raw HTTP
requests (possibly chunked); a Frida or debugger hook prints the POST body in the middle of a
log line, often JSON-escaped inside another string. So records are *found* rather than parsed
by file type: one pass over the bytes looks for the ``"telemetrics"``/``"event"`` keys (plain or
escaped), for HTTP request lines and for base64 gzip blobs (``H4sI…``), and decodes JSON with
:meth:`json.JSONDecoder.raw_decode` only where such a marker is, in a window that grows only
when the parser runs out of input. The work is linear in the file size, files are memory-mapped,
and no line is ``json.loads``-ed on speculation, so a few hundred MB of log are fine.

Every record found ends up either as rows or as a *problem* (file, line, wrapper entry index,
reason): redaction placeholders are a warning (the record is kept, placeholders read as null);
anything else broken is an error (the record yields no rows). Nothing is skipped silently,
except wrapper entries of another telemetry type (counted as ``ignored_entries``).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import gzip
import heapq
import itertools
import json
import logging
import math
import mmap
import re
import sys
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from reallymuted.io import DataError, write_csv, write_json

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

# ---------------------------------------------------------------------------------------------
# patterns of the single scanning pass (bytes: files are scanned as mapped bytes)

# a key of the wrapper or the payload, plain ("event":) or escaped inside a string (\"event\":);
# two patterns, because a pattern that starts with a literal is searched for ten times faster
_WRAPPER_KEY = re.compile(rb'(telemetrics)(\\*)"[ \t\r\n]*:[ \t\r\n]*')
_PAYLOAD_KEY = re.compile(rb'(event)(\\*)"[ \t\r\n]*:[ \t\r\n]*')
# base64 of a gzip stream always starts with H4sI (1f 8b 08); also read \/ and %2B-style escapes
_BLOB = re.compile(rb"H4sI[A-Za-z0-9+/=_-]*(?:(?:\\/|%2[BbFf]|%3[Dd])[A-Za-z0-9+/=_-]*)*")
_PLAIN_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_BASE64_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_MIN_LOOSE_BLOB = 20  # shorter "H4sI…" outside any JSON is not a telemetry record
_HTTP_VERSION = re.compile(rb" HTTP/1\.[01]\r?\n")
_REQUEST_START = re.compile(rb"[A-Z]{3,10} \S+")
_JSON_ESCAPE = re.compile(rb'\\(["\\/bfnrt]|u[0-9a-fA-F]{4})')
_ESCAPES = {b'"': b'"', b"\\": b"\\", b"/": b"/", b"b": b"\b", b"f": b"\f", b"n": b"\n"}
_ESCAPES |= {b"r": b"\r", b"t": b"\t"}
# the authors' redaction placeholders; not when quoted (then they are a legal string value)
_REDACTED_OBJECT = re.compile(r"\{[ \t\r\n]*(?<!\")\[redacted\](?!\")[ \t\r\n]*\}", re.IGNORECASE)
_REDACTED = re.compile(r"(?<!\")\[redacted\](?!\")", re.IGNORECASE)
# words that make a broken {"event": {…}} object worth reporting (a Webex payload, not noise)
_PAYLOAD_HINTS = (
    b"intervals",
    b"audioTransmit",
    b"mediaquality",
    b"sourceMetadata",
    b"MQ-Event",
    b"canProceed",
)


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


# ---------------------------------------------------------------------------------------------
# decoding one record


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


# ---------------------------------------------------------------------------------------------
# finding records


class _LineIndex:
    """1-based line of a byte position, counted incrementally (positions mostly increase)."""

    def __init__(self, data: bytes | mmap.mmap) -> None:
        self.data = data
        self.pos = 0
        self.line = 1

    def _count(self, start: int, end: int) -> int:
        total = 0
        for a in range(start, end, 1 << 24):  # bounded slices: never copy the whole map
            total += self.data[a : min(end, a + (1 << 24))].count(b"\n")
        return total

    def __call__(self, pos: int) -> int:
        if pos >= self.pos:
            self.line += self._count(self.pos, pos)
        else:
            self.line -= self._count(pos, self.pos)
        self.pos = pos
        return self.line


class _Window:
    """Decoded text of ``data[start:]``, grown (doubled) only when the parser runs out of it.

    Redaction placeholders are replaced length-preservingly, so text offsets map back to bytes
    by re-encoding only the stretch since the last mapped offset.
    """

    _decoder = json.JSONDecoder()

    def __init__(self, data: bytes | mmap.mmap, start: int) -> None:
        self.data = data
        self.start = start
        line_end = data.find(b"\n", start)
        end = len(data) if line_end < 0 else line_end + 1
        self.end = min(len(data), max(end, start + _INITIAL_WINDOW))
        self._load()

    def _load(self) -> None:
        text = self.data[self.start : self.end].decode("utf-8", "surrogateescape")
        self.redacted: list[int] = []
        if ("edacted]" in text or "EDACTED]" in text) and _REDACTED.search(text):
            self.redacted = [m.start() for m in _REDACTED.finditer(text)]
            text, _ = replace_redactions(text)
        self.text = text
        self.ascii = text.isascii()
        self._mapped = (0, 0)

    def grow(self) -> bool:
        if self.end >= len(self.data):
            return False
        self.end = min(len(self.data), self.start + 2 * (self.end - self.start))
        self._load()
        return True

    def byte_pos(self, i: int) -> int:
        """Absolute byte offset of text offset ``i``."""
        if self.ascii:
            return self.start + i
        last_i, last_b = self._mapped if i >= self._mapped[0] else (0, 0)
        b = last_b + len(self.text[last_i:i].encode("utf-8", "surrogateescape"))
        self._mapped = (i, b)
        return self.start + b

    def redactions_in(self, i: int, j: int) -> int:
        return bisect.bisect_left(self.redacted, j) - bisect.bisect_left(self.redacted, i)

    def raw_decode(self, i: int) -> tuple[Any, int]:
        while True:
            try:
                return self._decoder.raw_decode(self.text, i)
            except RecursionError:
                raise json.JSONDecodeError("nested too deeply", self.text, i) from None
            except json.JSONDecodeError as exc:
                ran_out = exc.pos >= len(self.text) - 16 or exc.msg.startswith("Unterminated")
                if not (ran_out and self.grow()):
                    raise

    def peek(self, i: int) -> tuple[int, str]:
        """Skip whitespace from ``i``; the offset and character there ('' at the very end)."""
        while True:
            while i < len(self.text) and self.text[i] in " \t\r\n":
                i += 1
            if i < len(self.text) or not self.grow():
                return i, self.text[i : i + 1]


def _unescape(raw: bytes) -> bytes:
    def one(m: re.Match[bytes]) -> bytes:
        code = m.group(1)
        if code[:1] == b"u":
            return chr(int(code[1:], 16)).encode("utf-8", "surrogatepass")
        return _ESCAPES[code]

    return _JSON_ESCAPE.sub(one, raw)


class _Scanner:
    """One pass over one buffer (a file, an unescaped string, a de-chunked HTTP body)."""

    def __init__(
        self,
        data: bytes | mmap.mmap,
        source_file: str,
        line_of: Callable[[int], int],
        depth: int = 0,
    ) -> None:
        self.data = data
        self.source_file = source_file
        self.line_of = line_of
        self.depth = depth
        self.consumed = 0  # everything before this offset belongs to a record already handled

    def records(self) -> Iterator[Record]:
        data = self.data
        events = heapq.merge(
            ((m.start(), 0, m) for m in _HTTP_VERSION.finditer(data)),
            ((m.start(), 1, m) for m in _WRAPPER_KEY.finditer(data)),
            ((m.start(), 1, m) for m in _PAYLOAD_KEY.finditer(data)),
            ((m.start(), 2, m) for m in _BLOB.finditer(data)),
            key=lambda e: (e[0], e[1]),
        )
        for pos, kind, match in events:
            if pos < self.consumed:
                continue
            if kind == 0:
                yield from self._http(match)
            elif kind == 1:
                yield from self._key(match)
            else:
                yield from self._loose_blob(match)

    def _record(self, pos: int, kind: str, content: Any, **extra: Any) -> Record:
        return Record(self.source_file, self.line_of(pos), content=content, kind=kind, **extra)

    def _backslashes_before(self, pos: int) -> int:
        n = 0
        while pos - n - 1 >= 0 and self.data[pos - n - 1] == 0x5C:
            n += 1
        return n

    # -- keys ---------------------------------------------------------------------------------

    def _key(self, m: re.Match[bytes]) -> Iterator[Record]:
        slashes = m.group(2)  # \"key\": as many backslashes before the opening quote
        quote = m.start() - 1
        if quote < 0 or self.data[quote] != 0x22 or self._backslashes_before(quote) != len(slashes):
            return  # not a JSON key (e.g. "subevent", or a key at another escape depth)
        if slashes:
            yield from self._escaped(quote, m.end())
        elif m.group(1) == b"telemetrics":
            yield from self._wrapper(m.end())
        else:
            yield from self._payload(quote, m.end())

    def _wrapper(self, bracket: int) -> Iterator[Record]:
        """The ``telemetrics`` array: one record per entry, each with its own line."""
        if self.data[bracket : bracket + 1] != b"[":
            return
        win = _Window(self.data, bracket)
        i, index = 1, 0
        while True:
            i, char = win.peek(i)
            if char == "]" and index == 0:
                self.consumed = win.byte_pos(i + 1)
                return
            try:
                entry, j = win.raw_decode(i)
            except json.JSONDecodeError as exc:
                yield from self._recover(win, i, exc.pos, index, exc.msg)
                return
            yield self._record(
                win.byte_pos(i), "entry", entry, record=index, redactions=win.redactions_in(i, j)
            )
            index += 1
            i, char = win.peek(j)
            if char == "]":
                self.consumed = win.byte_pos(i + 1)
                return
            if char != ",":
                problem = f"expected ',' or ']' after entry {index - 1}"
                yield from self._recover(win, i, i, index, problem)
                return
            i += 1

    def _payload(self, quote: int, value: int) -> Iterator[Record]:
        """A bare, already decoded payload (like the authors' dump): ``{"event": {…}, …}``."""
        if self.data[value : value + 1] != b"{":
            return  # e.g. "event": "mute" in a session's events.jsonl
        before = quote - 1
        while before >= 0 and self.data[before] in b" \t\r\n":
            before -= 1
        # "event" is the object's first key: the record is the whole object
        whole = before >= self.consumed and before >= 0 and self.data[before] == 0x7B
        start = before if whole else value
        win = _Window(self.data, start)
        try:
            obj, j = win.raw_decode(0)
        except json.JSONDecodeError as exc:
            # what the parser got through (at least a little: a nesting error stops at once)
            seen = self.data[start : max(start + 512, win.byte_pos(min(exc.pos, len(win.text))))]
            if any(hint in seen for hint in _PAYLOAD_HINTS):
                yield from self._recover(win, 0, exc.pos, None, exc.msg)
            else:
                log.debug("%s:%d: broken non-telemetry JSON", self.source_file, self.line_of(start))
            return
        payload = obj if whole else {"event": obj}
        event = payload.get("event")
        if not isinstance(event, dict) or not (
            "intervals" in event or "mediaquality" in str(event.get("name", ""))
        ):
            return  # some other program's "event" object
        self.consumed = win.byte_pos(j)
        yield self._record(
            start, "payload", payload, record=None, redactions=win.redactions_in(0, j)
        )

    def _recover(
        self, win: _Window, i: int, fail: int, index: int | None, problem: str
    ) -> Iterator[Record]:
        """The JSON of a record is broken: salvage its base64 blobs, or report it as broken.

        Only up to the end of the line where parsing failed, so the records that follow a
        truncated one are found as usual.
        """
        start = win.byte_pos(i)
        fail_byte = win.byte_pos(min(fail, len(win.text)))
        line_end = self.data.find(b"\n", fail_byte)
        end = len(self.data) if line_end < 0 else line_end
        at = "" if problem.endswith(" at") else " at"
        reason = f"invalid JSON: {problem}{at} line {self.line_of(fail_byte)}"
        if fail_byte >= len(self.data) - 16 or problem.startswith("Unterminated"):
            reason += " (the input ends inside the record: cut short?)"
        blobs = [b for b in _BLOB.finditer(self.data, start, end) if self._blob_start_ok(b)]
        for k, blob in enumerate(blobs):
            yield self._record(
                start if k == 0 else blob.start(),
                "blob",
                blob.group().decode("ascii"),
                record=None if index is None else index + k,
                note=f"; found in broken JSON: {reason}",
            )
        if not blobs:
            yield self._record(start, "broken", reason, record=index)
        self.consumed = end

    # -- escaped JSON inside a string ----------------------------------------------------------

    def _escaped(self, quote: int, after: int) -> Iterator[Record]:
        """``…\\"telemetrics\\":…`` inside another string: unescape that string, scan it again."""
        if self.depth >= MAX_ESCAPE_DEPTH:
            return
        data = self.data
        line_start = data.rfind(b"\n", 0, quote) + 1
        line_end = data.find(b"\n", after)
        line_end = len(data) if line_end < 0 else line_end
        opening = quote
        while True:  # the string's opening quote: the last one not escaped
            opening = data.rfind(b'"', line_start, opening)
            if opening < 0 or self._backslashes_before(opening) % 2 == 0:
                break
        closing = after
        while True:
            closing = data.find(b'"', closing, line_end)
            if closing < 0 or self._backslashes_before(closing) % 2 == 0:
                break
            closing += 1
        first = max(self.consumed, line_start if opening < 0 else opening + 1)
        last = line_end if closing < 0 else closing
        line = self.line_of(first)  # escaped text has no raw newline: one line for all inside
        inner = _Scanner(
            _unescape(data[first:last]), self.source_file, lambda _pos: line, self.depth + 1
        )
        yield from inner.records()
        self.consumed = last

    # -- loose base64 gzip ---------------------------------------------------------------------

    def _blob_start_ok(self, m: re.Match[bytes]) -> bool:
        """H4sI starts a blob only at a base64 boundary (not inside a longer base64 string)."""
        return m.start() == 0 or self.data[m.start() - 1] not in _BASE64_BYTES

    def _loose_blob(self, m: re.Match[bytes]) -> Iterator[Record]:
        if len(m.group()) < _MIN_LOOSE_BLOB or not self._blob_start_ok(m):
            return
        yield self._record(m.start(), "blob", m.group().decode("ascii"), record=None)

    # -- HTTP requests whose body is not plain text ----------------------------------------------

    def _http(self, m: re.Match[bytes]) -> Iterator[Record]:
        """A raw HTTP request: undo chunked transfer and gzip/deflate content encoding.

        Plain bodies need nothing: the key and blob patterns find the records in them.
        """
        data = self.data
        line_start = data.rfind(b"\n", 0, m.start()) + 1
        if not _REQUEST_START.fullmatch(data[line_start : m.start()]):
            return
        headers: dict[bytes, bytes] = {}
        pos = m.end()
        for _ in range(200):
            end = data.find(b"\n", pos, pos + 65536)
            if end < 0:
                return
            header = data[pos:end].rstrip(b"\r")
            pos = end + 1
            if not header:
                break
            name, sep, value = header.partition(b":")
            if sep:
                headers[name.strip().lower()] = value.strip().lower()
        else:
            return
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"")
        encoding = headers.get(b"content-encoding", b"identity")
        coding = encoding.decode(errors="replace")
        if not chunked and encoding in (b"", b"identity"):
            return
        request_line = self.line_of(line_start)
        body_line = request_line
        problems: list[str] = []
        if chunked:
            body, segments, end, problem = _dechunk(data, pos)
            if problem:
                problems.append(f"malformed chunked body ({problem})")
        else:
            length = headers.get(b"content-length", b"")
            if not length.isdigit():
                yield self._record(
                    line_start,
                    "notice",
                    f"HTTP request with Content-Encoding {coding} but no length: body not decoded",
                    record=None,
                )
                return
            end = min(len(data), pos + int(length))
            body, segments = data[pos:end], [(0, pos)]
        if encoding not in (b"", b"identity"):
            try:
                body = _content_decode(body, encoding)
            except (OSError, EOFError, zlib.error, ValueError) as exc:
                problems.append(f"Content-Encoding {coding} not decoded ({exc})")
            body_line = self.line_of(pos)
            segments = []  # compressed: every record is on the body's first line
        parent = self.line_of

        def line_of(local: int) -> int:
            if not segments:
                return body_line
            k = bisect.bisect_right(segments, (local, math.inf)) - 1
            decoded, original = segments[k]
            return parent(original + local - decoded)

        yield from _Scanner(body, self.source_file, line_of, self.depth + 1).records()
        for problem in problems:
            yield Record(
                self.source_file,
                request_line,
                None,
                "notice",
                f"HTTP request: {problem}; scanned what could be read",
            )
        self.consumed = end


def _dechunk(data: bytes | mmap.mmap, pos: int) -> tuple[bytes, list[tuple[int, int]], int, str]:
    """Undo ``Transfer-Encoding: chunked``; also where each chunk came from, for line numbers."""
    parts: list[bytes] = []
    segments: list[tuple[int, int]] = []
    decoded = 0
    while True:
        end = data.find(b"\n", pos, pos + 1024)
        if end < 0:
            return b"".join(parts), segments, pos, "chunk size line missing"
        size_text = data[pos:end].split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return b"".join(parts), segments, pos, f"bad chunk size {size_text[:20]!r}"
        pos = end + 1
        if size == 0:
            while True:  # optional trailers, then the empty line
                end = data.find(b"\n", pos)
                if end < 0 or not data[pos:end].strip():
                    return b"".join(parts), segments, len(data) if end < 0 else end + 1, ""
                pos = end + 1
        chunk = data[pos : pos + size]
        segments.append((decoded, pos))
        parts.append(chunk)
        decoded += len(chunk)
        pos += len(chunk)
        if len(chunk) < size:
            return b"".join(parts), segments, pos, f"chunk cut short ({len(chunk)} of {size} bytes)"
        if data[pos : pos + 2] == b"\r\n":
            pos += 2
        elif data[pos : pos + 1] == b"\n":
            pos += 1
        else:
            return b"".join(parts), segments, pos, "chunk not followed by a line break"


def _content_decode(body: bytes, encoding: bytes) -> bytes:
    """Undo ``Content-Encoding`` gzip or deflate (zlib-wrapped or raw), within a size bound."""
    if encoding in (b"gzip", b"x-gzip"):
        attempts = [31]
    elif encoding == b"deflate":
        attempts = [zlib.MAX_WBITS, -zlib.MAX_WBITS]  # raw deflate, as some servers send
    else:
        raise ValueError(f"unsupported encoding {encoding.decode(errors='replace')}")
    for k, wbits in enumerate(attempts):
        inflater = zlib.decompressobj(wbits)
        try:
            data = inflater.decompress(body, MAX_BODY_BYTES)
        except zlib.error:
            if k + 1 < len(attempts):
                continue
            raise
        if inflater.unconsumed_tail:
            raise ValueError(f"body larger than {MAX_BODY_BYTES} bytes once inflated")
        if not inflater.eof:
            raise EOFError("compressed body cut short")
        return data
    raise AssertionError("unreachable")


def find_records(data: bytes | mmap.mmap, source_file: str) -> Iterator[Record]:
    """Every telemetry record in ``data``, in file order, each with its line and entry index."""
    return _Scanner(data, source_file, _LineIndex(data)).records()


@contextlib.contextmanager
def _mapped(path: str | Path) -> Iterator[bytes | mmap.mmap]:
    """The file's bytes without reading them all into memory (stdin for ``-``)."""
    if str(path) == "-":
        yield sys.stdin.buffer.read()
        return
    try:
        fh = Path(path).open("rb")  # noqa: SIM115 (closed below; only opening errors are ours)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    with fh:
        try:
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError):  # empty, or not mappable (a pipe, a device): read it
            data = fh.read()
        else:
            try:
                yield mapped
            finally:
                # a scan interrupted by an exception may still hold a view of the map
                with contextlib.suppress(BufferError):
                    mapped.close()
            return
        yield data


def decode_bytes(
    data: bytes | mmap.mmap, source_file: str, report: DecodeReport | None = None
) -> DecodeReport:
    """Find and decode every record of one buffer into ``report`` (a new one by default)."""
    report = report if report is not None else DecodeReport()
    report.files += 1
    for record in find_records(data, source_file):
        report.add(record)
    return report


def decode_files(paths: Iterable[str | Path], names: dict[str, str] | None = None) -> DecodeReport:
    """Decode every record of every file; ``names`` maps a path to the name shown in tables."""
    report = DecodeReport()
    names = names or {}
    for path in paths:
        with _mapped(path) as data:
            decode_bytes(data, names.get(str(path), str(path)), report)
        log.info("%s: %d record(s) so far", path, report.records_found)
    return report


# ---------------------------------------------------------------------------------------------
# encoding (tests, and the testbed profile imitating Webex)


def _level_value(interval: dict[str, Any], key: str, default: Any = None) -> Any:
    for name in (key, LEVELS[key]):
        if name in interval:
            return interval[name]
    if default is None:
        raise ValueError(f"interval {interval!r} has no {key} / {LEVELS[key]}")
    return default


def _iso(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def wmequality_payload(
    intervals: list[dict[str, Any]],
    start_time: str,
    *,
    end_time: str | None = None,
    interval_seconds: float = 60,
    first_interval_number: int = 1,
    packets_per_second: int = 100,
    volume: int = DEFAULT_VOLUME,
) -> dict[str, Any]:
    """A payload shaped like the authors' decoded record, one interval per given dict.

    Each interval gives the three gains under the payload's names (``audioMaxGain``) or the
    table's (``audio_max_gain``); volumes default to ``volume``, and an interval may override
    ``intervalNumber`` and ``captureHardwareProvidedAudioPacketsPerSecond``. ``end_time``
    defaults to ``start_time`` plus one ``interval_seconds`` per interval.
    """
    if not intervals:
        raise ValueError("a wmequality payload needs at least one interval")
    start = _parse_iso(start_time)
    end = end_time or _iso(start + timedelta(seconds=interval_seconds * len(intervals)))
    body = []
    for k, interval in enumerate(intervals):
        levels = {
            key: _level_value(interval, key, None if "Gain" in key else volume)
            for key in sorted(LEVELS)
        }
        body.append(
            {
                "audioReceive": [],
                "audioTransmit": [
                    {
                        "captureHardwareProvidedAudioPacketsPerSecond": interval.get(
                            "captureHardwareProvidedAudioPacketsPerSecond", packets_per_second
                        ),
                        "common": {"common": {"direction": "sendrecv", "isMain": True}},
                        "levels": levels,
                        "sharedAudioPacketsPerSecond": 0,
                        "streams": [],
                    }
                ],
                "intervalMetadata": {"peripherals": [{"name": "microphone"}]},
                "intervalNumber": interval.get("intervalNumber", first_interval_number + k),
                "videoReceive": [],
                "videoTransmit": [],
            }
        )
    return {
        "event": {
            "canProceed": True,
            "eventData": {"MQ-Event-String": "THIS IS MQ EVENT DATA"},
            "identifiers": {},
            "intervals": body,
            "name": "client.mediaquality.event",
            "sourceMetadata": {
                "applicationSoftwareType": "reallymuted testbed",
                "endTime": end,
                "mediaEngineSoftwareType": "wme",
                "startTime": start_time,
            },
            "trigger": "media-quality",
        },
        # deterministic, so generated test files are byte-identical on every run
        "eventId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"reallymuted:wmequality:{start_time}")),
        "origin": {"name": "endpoint", "userAgent": "reallymuted-testbed"},
        "originTime": {"sent": end, "triggered": end},
        "version": 1,
    }


def gzip_b64(payload: dict[str, Any] | str | bytes) -> str:
    """base64 of a gzip of the payload's compact JSON (mtime 0: the same bytes every time)."""
    if isinstance(payload, dict):
        payload = json.dumps(payload, separators=(",", ":"))
    raw = payload.encode() if isinstance(payload, str) else payload
    return base64.b64encode(gzip.compress(raw, mtime=0)).decode("ascii")


def wrap_entries(blobs: list[str], types: list[str] | None = None) -> dict[str, Any]:
    """The outer wrapper around already encoded ``gzipb64data`` strings."""
    types = types or [TELEMETRY_TYPE] * len(blobs)
    return {
        "telemetrics": [
            {"t": t, "v": {"gzipb64data": b}} for t, b in zip(types, blobs, strict=True)
        ]
    }


def encode_wmequality(
    intervals: list[dict[str, Any]], start_time: str, **payload_options: Any
) -> dict[str, Any]:
    """A complete wrapper record, as Webex posts it, carrying the given intervals.

    ``payload_options`` are those of :func:`wmequality_payload`.
    """
    return wrap_entries([gzip_b64(wmequality_payload(intervals, start_time, **payload_options))])


# ---------------------------------------------------------------------------------------------
# the workflow's reference decode and the claim values of T1


def claim_values(table: pd.DataFrame, report: DecodeReport) -> dict[str, Any]:
    """Named numbers for claim T1: what decoded records say about a muted microphone.

    ``gain_range`` is [lowest, highest] of all three gains (the paper: "vary, roughly 14–97"),
    ``volumes`` and ``capture_packets_per_second`` the distinct values seen (the paper: constant
    27369, and 100 while muted); record spacing needs more than one record (the paper: 60 s).
    """
    gains = pd.concat([table[c] for c in GAIN_COLUMNS]).dropna()
    volumes = pd.concat([table[c] for c in VOLUME_COLUMNS]).dropna()
    values: dict[str, Any] = {
        "records": report.records_decoded,
        "records_found": report.records_found,
        "intervals": len(table),
        "warnings": len(report.warnings),
        "errors": len(report.errors),
        "gain_range": [_scalar(gains.min()), _scalar(gains.max())] if len(gains) else [],
    }
    for column in GAIN_COLUMNS:
        values[f"{column}_min"] = _scalar(table[column].min()) if len(table) else None
        values[f"{column}_max"] = _scalar(table[column].max()) if len(table) else None
    values["volumes"] = sorted({_scalar(v) for v in volumes})
    values["capture_packets_per_second"] = sorted(
        {_scalar(v) for v in table["capture_packets_per_second"].dropna()}
    )
    records = table.drop_duplicates(["source_file", "line", "record"])
    # a timestamp that is not ISO 8601 is still a row, but takes no part in the spacing
    parsed = pd.to_datetime(
        records["record_timestamp"], utc=True, errors="coerce", format="ISO8601"
    )
    stamps = sorted(set(parsed.dropna()))
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    values["record_spacing_s_median"] = float(pd.Series(gaps).median()) if gaps else None
    values["record_spacing_s_min"] = min(gaps) if gaps else None
    values["record_spacing_s_max"] = max(gaps) if gaps else None
    values["first_record_timestamp"] = _iso(stamps[0]) if stamps else None
    values["last_record_timestamp"] = _iso(stamps[-1]) if stamps else None
    return values


def _scalar(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return int(value) if isinstance(value, float) and value.is_integer() else value


def decode_reference(path: str | Path, out: dict[str, str | Path], name: str) -> DecodeReport:
    """Decode the authors' record(s) and write ``out['table']``, ``problems`` and ``values``.

    The file is checksum-verified, so an error here means the decoder is wrong: stop the run.
    Redaction placeholders are expected (a warning, kept in the problems table).
    """
    report = decode_files([path], names={str(path): name})
    if report.errors or not report.records_decoded:
        raise DataError(f"{path}: the reference telemetry did not decode\n{report.summary()}")
    table = report.table()
    table.insert(0, "source", SOURCE)
    problems = report.problems_table()
    problems.insert(0, "source", SOURCE)
    write_csv(out["table"], table)
    write_csv(out["problems"], problems)
    write_json(out["values"], {"source": SOURCE, **claim_values(table, report)})
    log.info("reference telemetry: %s", report.summary())
    return report
