"""Finding records in any bytes: one linear pass over a (memory-mapped) file for the wrapper
and payload keys, HTTP requests and base64 gzip blobs, decoding JSON only where a marker is."""

from __future__ import annotations

import bisect
import contextlib
import heapq
import json
import logging
import math
import mmap
import re
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from reallymuted.analysis.telemetry.bodies import content_decode, dechunk
from reallymuted.analysis.telemetry.decode import _REDACTED, DecodeReport, replace_redactions
from reallymuted.analysis.telemetry.records import (
    _INITIAL_WINDOW,
    MAX_ESCAPE_DEPTH,
    Record,
)
from reallymuted.io import DataError

log = logging.getLogger(__name__)

# patterns of the single scanning pass (bytes: files are scanned as mapped bytes)

# a key of the wrapper or the payload, plain ("event":) or escaped inside a string (\"event\":);
# two patterns, because a pattern that starts with a literal is searched for ten times faster
_WRAPPER_KEY = re.compile(rb'(telemetrics)(\\*)"[ \t\r\n]*:[ \t\r\n]*')
_PAYLOAD_KEY = re.compile(rb'(event)(\\*)"[ \t\r\n]*:[ \t\r\n]*')
# base64 of a gzip stream always starts with H4sI (1f 8b 08); also read \/ and %2B-style escapes
_BLOB = re.compile(rb"H4sI[A-Za-z0-9+/=_-]*(?:(?:\\/|%2[BbFf]|%3[Dd])[A-Za-z0-9+/=_-]*)*")
_BASE64_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_MIN_LOOSE_BLOB = 20  # shorter "H4sI…" outside any JSON is not a telemetry record
_HTTP_VERSION = re.compile(rb" HTTP/1\.[01]\r?\n")
_REQUEST_START = re.compile(rb"[A-Z]{3,10} \S+")
_JSON_ESCAPE = re.compile(rb'\\(["\\/bfnrt]|u[0-9a-fA-F]{4})')
_ESCAPES = {b'"': b'"', b"\\": b"\\", b"/": b"/", b"b": b"\b", b"f": b"\f", b"n": b"\n"}
_ESCAPES |= {b"r": b"\r", b"t": b"\t"}
# words that make a broken {"event": {…}} object worth reporting (a Webex payload, not noise)
_PAYLOAD_HINTS = (
    b"intervals",
    b"audioTransmit",
    b"mediaquality",
    b"sourceMetadata",
    b"MQ-Event",
    b"canProceed",
)


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
            body, segments, end, problem = dechunk(data, pos)
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
                body = content_decode(body, encoding)
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
