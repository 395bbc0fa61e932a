"""pcap and pcapng files as packet records: where each packet's bytes are, its time and link.

The records are walked once in Python, reading only lengths (pcap records; pcapng enhanced,
simple and obsolete packet blocks of every section, each timed by its interface's
``if_tsresol`` and ``if_tsoffset``); every packet's header is then read at once with numpy
gathers over the file's bytes (:class:`Bytes`). A capture cut off mid-record keeps what is
whole, with a warning.

Known differences from tshark (none occurs in the study's captures, see tests/test_pcapread.py):

* simple packet blocks (pcapng SPB: no time; dumpcap does not write them) get time 0;
* ``time_epoch`` is computed as ``seconds + nanoseconds / 1e9``, exactly what parsing
  tshark's printed value gives (checked on 200 000 random times).
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reallymuted.io import DataError

log = logging.getLogger(__name__)


@dataclass
class Records:
    """Where each packet's bytes are in ``buf``, with its time and link type."""

    buf: np.ndarray
    start: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    linktype: np.ndarray
    time: np.ndarray


def read_records(path: Path) -> Records:
    """Walk pcap records or pcapng blocks (a Python loop that only reads lengths), then read
    every packet's header at once; a capture cut off mid-record keeps what is whole."""
    data = path.read_bytes()
    buf = np.frombuffer(data + bytes(64), dtype=np.uint8)  # reads past a packet stay inside
    magic, size = data[:4], len(data)
    if not size:  # no packets, as tshark reads it (dumpcap always writes a header)
        log.warning("%s: empty file, no packets", path)
        none = np.zeros(0, dtype=np.int64)
        return Records(buf, none, none, none, none, np.zeros(0))
    if magic == b"\x0a\x0d\x0d\x0a":
        return _pcapng(path, data, buf)
    order = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<"}.get(magic, ">")
    if magic not in (
        b"\xd4\xc3\xb2\xa1",
        b"\xa1\xb2\xc3\xd4",
        b"\x4d\x3c\xb2\xa1",
        b"\xa1\xb2\x3c\x4d",
    ):
        raise DataError(f"{path}: not a pcap or pcapng file")
    per_s = 10**9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 10**6
    link = struct.unpack_from(order + "I", data, 20)[0] & 0x0FFFFFFF
    length, records, offset = struct.Struct(order + "I").unpack_from, [], 24
    while offset + 16 <= size:
        end = offset + 16 + length(data, offset + 8)[0]
        if end > size:
            break
        records.append(offset)
        offset = end
    _cut_warning(path, offset != size, len(records))
    at = np.asarray(records, dtype=np.int64)
    word = Bytes(buf).u32 if order == ">" else Bytes(buf).u32le
    seconds, fraction = word(at), word(at + 4) * (10**9 // per_s)
    return Records(
        buf, at + 16, word(at + 8), word(at + 12), np.full(len(at), link), _time(seconds, fraction)
    )


def _pcapng(path: Path, data: bytes, buf: np.ndarray) -> Records:
    """Packet blocks (enhanced, simple, obsolete) of every section, timed by their interface."""
    order, sections, packets, offset, size = "<", [], [], 0, len(data)
    while offset + 12 <= size:
        kind = struct.unpack_from(order + "I", data, offset)[0]
        if kind == 0x0A0D0D0A:  # section header: byte order and a new interface list
            order = "<" if data[offset + 8 : offset + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            sections.append([])
        block = struct.unpack_from(order + "I", data, offset + 4)[0]
        if block < 12 or offset + block > size:
            break
        if kind in (2, 3, 6):
            packets.append((offset, kind, order == ">", len(sections) - 1, block))
        elif kind == 1:
            sections[-1].append(_interface(data, offset, block, order))
        offset += block
    _cut_warning(path, offset != size, len(packets))
    rec = np.array(packets, dtype=np.int64).reshape(-1, 5)
    n, b = len(rec), Bytes(buf)
    start, seconds, fraction, caplen, wirelen, link = (np.zeros(n, np.int64) for _ in range(6))
    key = rec[:, 3] * 16 + rec[:, 1] * 2 + rec[:, 2]  # section, block kind, byte order
    for group in np.unique(key):
        rows = np.flatnonzero(key == group)
        section, kind, big = group // 16, group % 16 // 2, group % 2
        at, word = rec[rows, 0], b.u32 if big else b.u32le
        links, per_s, shift = (np.array(v) for v in zip(*sections[section], strict=True))
        if kind == 3:  # simple packet block: first interface, no time
            wirelen[rows] = word(at + 8)
            caplen[rows] = np.minimum(wirelen[rows], rec[rows, 4] - 16)
            start[rows], link[rows] = at + 12, links[0]
            continue
        iface = word(at + 8) if kind == 6 else (b.u16 if big else b.u16le)(at + 8)
        ticks = (word(at + 12) << 32 | word(at + 16)) + shift[iface] * per_s[iface]
        seconds[rows], fraction[rows] = ticks // per_s[iface], ticks % per_s[iface]
        fraction[rows] = fraction[rows] * 10**9 // per_s[iface]
        caplen[rows], wirelen[rows] = word(at + 20), word(at + 24)
        start[rows], link[rows] = at + 28, links[iface]
    return Records(buf, start, caplen, wirelen, link, _time(seconds, fraction))


def _time(seconds: np.ndarray, nanoseconds: np.ndarray) -> np.ndarray:
    """Epoch seconds as float, the arithmetic pyarrow does parsing tshark's printed value."""
    return seconds.astype(np.float64) + nanoseconds.astype(np.float64) / 1e9


def _cut_warning(path: Path, cut: bool, packets: int) -> None:
    if cut:
        log.warning("%s: the capture is cut off after %d complete packets", path, packets)


def _interface(data: bytes, offset: int, size: int, order: str) -> tuple[int, int, int]:
    """(link type, ticks per second, if_tsoffset seconds) of an interface description block."""
    link = struct.unpack_from(order + "H", data, offset + 8)[0]
    per_s, shift, pos, end = 1_000_000, 0, offset + 16, offset + size - 4
    while pos + 4 <= end:
        code, length = struct.unpack_from(order + "HH", data, pos)
        if code == 0:
            break
        if code == 9 and length >= 1:  # if_tsresol: 10^-n, or 2^-n with the top bit set
            value = data[pos + 4]
            per_s = 2 ** (value & 0x7F) if value & 0x80 else 10**value
        elif code == 14 and length >= 8:  # if_tsoffset: seconds added to every time
            shift = struct.unpack_from(order + "q", data, pos + 4)[0]
        pos += 4 + (length + 3) // 4 * 4
    return link, per_s, shift


class Bytes:
    """Big-endian reads at many positions of one buffer at once."""

    def __init__(self, buf: np.ndarray) -> None:
        self.buf = buf

    def u8(self, pos: np.ndarray) -> np.ndarray:
        return self.buf[np.minimum(pos, len(self.buf) - 1)].astype(np.int64)

    def u16(self, pos: np.ndarray) -> np.ndarray:
        return self.u8(pos) << 8 | self.u8(pos + 1)

    def u32(self, pos: np.ndarray) -> np.ndarray:
        return self.u16(pos) << 16 | self.u16(pos + 2)

    def u16le(self, pos: np.ndarray) -> np.ndarray:
        return self.u8(pos + 1) << 8 | self.u8(pos)

    def u32le(self, pos: np.ndarray) -> np.ndarray:
        return self.u16le(pos + 2) << 16 | self.u16le(pos)
