"""An HTTP request body as it was sent, made plain for the scanner: chunked transfer undone
(keeping where each chunk came from, for line numbers), gzip or deflate content undone within
the size bound of one record."""

from __future__ import annotations

import mmap
import zlib

from reallymuted.analysis.telemetry.records import MAX_BODY_BYTES


def dechunk(data: bytes | mmap.mmap, pos: int) -> tuple[bytes, list[tuple[int, int]], int, str]:
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


def content_decode(body: bytes, encoding: bytes) -> bytes:
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
