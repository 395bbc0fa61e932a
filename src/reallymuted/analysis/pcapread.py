"""A vectorised pcap/pcapng reader giving the packet table that ``tshark -T fields`` gives.

Why: a session's extraction was bound by tshark's full dissection (~50 k packets/s). The
study needs a few header fields, so the records are walked once in Python and every field is
then read for all packets at once with numpy gathers over the file's bytes; only rare packets
(IP fragments, ICMP errors, TCP payload, SIP, DTLS candidates) go through Python one by one.

tshark (``extract.read_packets(..., reader="tshark")``) stays the oracle: the classification
reproduces what tshark 4.0 with ``rtp.heuristic_rtp:TRUE`` puts in ``frame.protocols``, for
the protocols of ``extract.PROTOCOL_ORDER``, in tshark's order for UDP: conversations SIP's SDP
set up, then decode-as and fixed ports, then heuristics: STUN (length and magic cookie), SIP
(request or status line), RTP (version 2, payload type not 72..76, CSRCs, extension and
padding within the datagram: 4.0's heuristic has no even-port test), RTCP (SR/RR/BYE/APP/PSFB
first, length a multiple of 4), DTLS (records ending exactly at the datagram's end). RTP with
the marker bit and payload type 64..95 is handed to RTCP (``rtp:rtcp``, no RTP fields), as
tshark does for rtcp-mux. TCP: HTTP ports, decode-as ports or the HTTP first-line heuristic
(which then holds for the conversation); an HTTP message is named on the segment that
completes it (headers to the empty line, then Content-Length or chunked body), a segment that
leaves it incomplete stays ``tcp``, data in an HTTP conversation outside a message is HTTP
continuation when it holds a line end; a segment starting with a TLS record header is
``tls``. IPv4 and IPv6 fragments are reassembled: the completing frame carries the
datagram, the others are ``data``. An ICMP error quoting a datagram is named after the quote
and its ``src``/``dst`` list the outer then the quoted address (``a;b``), as tshark prints
repeated fields.

Known differences (none occurs in the study's captures, see tests/test_pcapread.py):

* only these UDP ports are known: 53 dns, 3478 stun, 5060 sip, 5353 mdns, 853/2221/5684/5868
  dtls; tshark knows ~330, so traffic on another registered port (an ephemeral port that
  happens to be one) may be named by tshark after that port's protocol; the other ~60
  UDP heuristics of tshark (WireGuard, QUIC, ...) are not tried;
* TCP is read in capture order: retransmitted, overlapping or out-of-order segments and
  sequence gaps are not handled as tshark does; an HTTP response without length ends with
  its segment; TLS is named per segment that starts with a record header, without
  reassembly;
* an IP fragment with no payload is ``data`` here, ``ip`` in tshark;
* simple packet blocks (pcapng SPB: no time; dumpcap does not write them) get time 0;
* SDP-made RTP conversations are followed for IPv4 ``c=`` addresses only, from the frame
  whose SDP names them (tshark waits for the answer to apply an offer);
* a non-IP frame, or an IP protocol other than UDP/TCP/ICMP, is named by a small table
  (arp, icmp, igmp, icmpv6, data) where tshark names its own last dissector;
* ``time_epoch`` is computed as ``seconds + nanoseconds / 1e9``, exactly what parsing
  tshark's printed value gives (checked on 200 000 random times).
"""

from __future__ import annotations

import logging
import re
import struct
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path

import numpy as np
import pandas as pd

from reallymuted.io import DataError

log = logging.getLogger(__name__)

UDP_PORTS = {53: "dns", 3478: "stun", 5060: "sip", 5353: "mdns"}
UDP_PORTS |= dict.fromkeys((853, 2221, 5684, 5868), "dtls")
HTTP_TCP_PORTS = {80, 3128, 3132, 5985, 8080, 8088, 11371, 1900, 2869, 2710}
IP_PROTOCOL_NAMES = {1: "icmp", 2: "igmp", 58: "icmpv6"}
ETHERTYPE_NAMES = {0x0806: "arp"}
RTCP_HEURISTIC_TYPES = [200, 201, 203, 204, 206]  # SR, RR, BYE, APP, PSFB may open a compound
SIP_START = re.compile(
    rb"^(?:[A-Z]+ \S+ SIP/2\.0|SIP/2\.0 \d{3}[^\r\n]*)\r?\n"
)  # a request or status line: what tshark's SIP heuristic looks for
HTTP_METHOD_LINE = re.compile(rb"^([A-Z-]+) (\S+) HTTP/1\.\d$")


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


def _ipv6_text(raw: bytes) -> str:
    """An IPv6 address as tshark (glibc's inet_ntop) prints it, IPv4 tails included."""
    if raw[:10] == bytes(10) and raw[10:12] == b"\xff\xff":
        return "::ffff:" + ".".join(map(str, raw[12:]))
    if raw[:12] == bytes(12) and raw[12:14] != bytes(2):
        return "::" + ".".join(map(str, raw[12:]))
    return str(IPv6Address(raw))


def _address_text(b: Bytes, pos: np.ndarray, version: np.ndarray) -> np.ndarray:
    """Addresses at ``pos`` as text: IPv4 where version is 4, IPv6 where 6, else None."""
    text = np.full(len(pos), None, dtype=object)
    v4 = np.flatnonzero(version == 4)
    if len(v4):
        values, inverse = np.unique(b.u32(pos[v4]), return_inverse=True)
        names = np.array([f"{v >> 24}.{v >> 16 & 255}.{v >> 8 & 255}.{v & 255}" for v in values])
        text[v4] = names[inverse]
    v6 = np.flatnonzero(version == 6)
    if len(v6):
        raw = b.buf[np.minimum(pos[v6, None] + np.arange(16), len(b.buf) - 1)]
        values, inverse = np.unique(
            np.ascontiguousarray(raw).view("V16").ravel(), return_inverse=True
        )
        names = np.array([_ipv6_text(v.tobytes()) for v in values], dtype=object)
        text[v6] = names[inverse.ravel()]
    return text


@dataclass
class Network:
    """Layer 3 and 4 of every packet (-1 where absent); payload = the transport's data."""

    version: np.ndarray
    proto: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    l4: np.ndarray
    l4_len: np.ndarray
    end: np.ndarray
    name: np.ndarray


def _link_layer(b: Bytes, r: Records) -> tuple[np.ndarray, np.ndarray]:
    """Position of the network header and its ethertype (0x0800 / 0x86DD / other)."""
    n = len(r.start)
    pos, etype = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64)
    for link in np.unique(r.linktype):
        rows = np.flatnonzero(r.linktype == link)
        s = r.start[rows]
        if link == 1:  # Ethernet, with 802.1Q / QinQ tags skipped
            p, t = s + 14, b.u16(s + 12)
            for _ in range(2):
                tagged = np.isin(t, (0x8100, 0x88A8, 0x9100))
                t = np.where(tagged, b.u16(p + 2), t)
                p = np.where(tagged, p + 4, p)
        elif link == 113:  # Linux cooked capture v1
            p, t = s + 16, b.u16(s + 14)
        elif link == 276:  # Linux cooked capture v2
            p, t = s + 20, b.u16(s)
        elif link in (12, 14, 101, 228, 229):  # raw IP: the version nibble says which
            p, version = s, b.u8(s) >> 4
            t = np.select([version == 4, version == 6], [0x0800, 0x86DD], 0)
        elif link in (0, 108):  # BSD loopback: address family, host (0) or network (108) order
            family = b.u8(s) | b.u8(s + 3) if link == 0 else b.u8(s + 3)
            p = s + 4
            t = np.select([family == 2, np.isin(family, (10, 24, 28, 30))], [0x0800, 0x86DD], 0)
        else:
            continue
        pos[rows], etype[rows] = p, t
    return pos, etype


def _ip_layer(b: Bytes, pos: np.ndarray, etype: np.ndarray, end: np.ndarray) -> Network:
    """IPv4/IPv6 headers at ``pos``; fragments are marked by ``proto`` -2 (reassembled later)."""
    n = len(pos)
    net = Network(
        np.zeros(n, np.int64),
        np.full(n, -1, np.int64),
        np.full(n, None, object),
        np.full(n, None, object),
        np.full(n, -1, np.int64),
        np.zeros(n, np.int64),
        end.copy(),
        np.full(n, "data", object),
    )
    v4 = np.flatnonzero((etype == 0x0800) & (b.u8(pos) >> 4 == 4))
    p = pos[v4]
    header = (b.u8(p) & 15) * 4
    total = b.u16(p + 2)
    net.version[v4] = 4
    net.proto[v4] = b.u8(p + 9)
    net.l4[v4] = p + header
    net.l4_len[v4] = total - header
    net.end[v4] = np.minimum(end[v4], p + total)
    fragment = (b.u16(p + 6) & 0x3FFF) != 0
    net.src[v4] = _address_text(b, p + 12, net.version[v4])
    net.dst[v4] = _address_text(b, p + 16, net.version[v4])
    net.proto[v4[fragment]] = -2
    v6 = np.flatnonzero((etype == 0x86DD) & (b.u8(pos) >> 4 == 6))
    p = pos[v6]
    net.version[v6] = 6
    net.src[v6] = _address_text(b, p + 8, net.version[v6])
    net.dst[v6] = _address_text(b, p + 24, net.version[v6])
    nxt, at, stop = b.u8(p + 6), p + 40, p + 40 + b.u16(p + 4)
    fragment = np.zeros(len(v6), dtype=bool)
    for _ in range(8):  # hop-by-hop, routing, destination options, fragment, AH headers
        ext = np.isin(nxt, (0, 43, 60, 44, 51)) & ~fragment
        if not ext.any():
            break
        size = np.select(
            [nxt == 44, nxt == 51], [8, (b.u8(at + 1) + 2) * 4], (b.u8(at + 1) + 1) * 8
        )
        fragment |= (nxt == 44) & ((b.u16(at + 2) & 0xFFF9) != 0)
        nxt = np.where(ext, b.u8(at), nxt)
        at = np.where(ext, at + size, at)
    net.proto[v6] = np.where(fragment, -2, nxt)
    net.l4[v6] = at
    net.l4_len[v6] = stop - at
    net.end[v6] = np.minimum(end[v6], stop)
    net.name[etype == 0x0806] = "arp"
    return net


def _reassemble(b: Bytes, net: Network, frames: np.ndarray) -> Bytes:
    """IP fragments: the frame that completes a datagram carries it whole (tshark's default)."""
    rows = np.flatnonzero(net.proto == -2)
    if not len(rows):
        return b
    raw, pending, extra, at = b.buf, {}, [], len(b.buf)
    for row in rows:
        start = int(frames[row])
        if net.version[row] == 4:
            flags = int(b.u16(np.array([start + 6]))[0])
            ident, nxt = raw[start + 4 : start + 6].tobytes(), int(raw[start + 9])
            offset, more, data_at = (flags & 0x1FFF) * 8, bool(flags & 0x2000), int(net.l4[row])
        else:
            ident, nxt, offset, more, data_at = _ipv6_fragment(raw, start)
        data = raw[data_at : int(net.end[row])].tobytes()
        key = (net.src[row], net.dst[row], ident, nxt)
        parts = pending.setdefault(key, {"parts": {}, "total": None})
        parts["parts"][offset] = data
        if not more:
            parts["total"] = offset + len(data)
        whole = _whole(parts)
        if whole is not None:
            del pending[key]
            net.proto[row], net.l4[row], net.l4_len[row] = nxt, at, len(whole)
            net.end[row] = at + len(whole)
            extra.append(whole)
            at += len(whole)
    if not extra:
        return b
    return Bytes(np.concatenate([raw, np.frombuffer(b"".join(extra) + bytes(64), np.uint8)]))


def _whole(entry: dict) -> bytes | None:
    if entry["total"] is None:
        return None
    data, covered = bytearray(entry["total"]), 0
    for offset in sorted(entry["parts"]):
        if offset > covered:
            return None
        part = entry["parts"][offset]
        data[offset : offset + len(part)] = part
        covered = max(covered, offset + len(part))
    return bytes(data) if covered >= entry["total"] else None


def _ipv6_fragment(raw: np.ndarray, start: int) -> tuple[bytes, int, int, bool, int]:
    """(id, next header, offset, more, data position) of an IPv6 fragment header."""
    nxt, at = int(raw[start + 6]), start + 40
    while nxt != 44:
        size = 8 * (int(raw[at + 1]) + 1) if nxt != 51 else 4 * (int(raw[at + 1]) + 2)
        nxt, at = int(raw[at]), at + size
    field = int(raw[at + 2]) << 8 | int(raw[at + 3])
    return raw[at + 4 : at + 8].tobytes(), int(raw[at]), field & 0xFFF8, bool(field & 1), at + 8


def _icmp_errors(b: Bytes, net: Network) -> None:
    """An ICMP error quoting a datagram is named and addressed after the quote, as tshark's
    fields come out: ``ip.src`` lists the outer then the quoted address."""
    icmp_type = b.u8(net.l4)
    error = ((net.proto == 1) & np.isin(icmp_type, (3, 4, 5, 11, 12))) | (
        (net.proto == 58) & np.isin(icmp_type, (1, 2, 3, 4))
    )
    echo = ((net.proto == 1) & np.isin(icmp_type, (0, 8))) | (
        (net.proto == 58) & np.isin(icmp_type, (128, 129))
    )
    named = np.isin(net.proto, list(IP_PROTOCOL_NAMES))
    net.name[named] = [IP_PROTOCOL_NAMES[p] for p in net.proto[named]]
    net.name[echo & (net.l4_len > 8)] = "data"  # the echo's payload goes to "data"
    rows = np.flatnonzero(error)
    if not len(rows):
        return
    inner_at = net.l4[rows] + 8
    version = b.u8(inner_at) >> 4
    inner = _ip_layer(b, inner_at, np.where(version == 4, 0x0800, 0x86DD), net.end[rows])
    quoted = inner.version > 0
    rows, inner_rows = rows[quoted], np.flatnonzero(quoted)
    for field in ("proto", "l4", "l4_len", "end", "name"):
        getattr(net, field)[rows] = getattr(inner, field)[inner_rows]
    net.proto[rows] = np.where(net.proto[rows] == -2, -1, net.proto[rows])
    for field in ("src", "dst"):
        outer, quote = getattr(net, field)[rows], getattr(inner, field)[inner_rows]
        getattr(net, field)[rows] = [f"{o};{q}" for o, q in zip(outer, quote, strict=True)]


def _decode_as(rules: list[str] | None) -> tuple[dict[int, str], set[int]]:
    """tshark ``-d`` rules ``udp.port==N,proto`` / ``tcp.port==N,http`` as port tables."""
    udp, http = {}, set()
    for rule in rules or []:
        match = re.fullmatch(r"(udp|tcp)\.port==(\d+),(\w+)", rule.replace(" ", ""))
        if not match:
            raise DataError(
                f"decode_as rule {rule!r}: expected udp.port==N,proto or tcp.port==N,http"
            )
        transport, port, proto = match[1], int(match[2]), match[3].lower()
        if transport == "udp":
            udp[port] = proto
        elif proto == "http":
            http.add(port)
    return udp, http


def _sdp_conversations(payloads: list[tuple[int, bytes]]) -> tuple[dict, dict]:
    """(IPv4 address, port) -> first frame, for RTP and RTCP set up by SIP's SDP bodies."""
    rtp, rtcp = {}, {}
    for frame, data in payloads:
        body = data.split(b"\r\n\r\n", 1)[-1].decode("latin-1")
        address, mux = None, "a=rtcp-mux" in body
        for line in body.splitlines():
            if line.startswith("c=IN IP4 "):
                address = line.split()[2].split("/")[0]
            elif line.startswith("m=") and address and line.split()[1].isdigit():
                port = int(line.split()[1])
                if port:
                    rtp.setdefault((address, port), frame)
                    if not mux:
                        rtcp.setdefault((address, port + 1), frame)
    return rtp, rtcp


def _dtls_records(data: bytes) -> bool:
    """tshark's DTLS heuristic: whole DTLS records that end exactly at the datagram's end."""
    offset = 0
    while offset + 13 <= len(data):
        if data[offset] not in (20, 21, 22, 23, 24, 25) or data[offset + 1 : offset + 3] not in (
            b"\xfe\xff",
            b"\xfe\xfd",
            b"\x01\x00",
        ):
            return False
        offset += 13 + (data[offset + 11] << 8 | data[offset + 12])
        if offset == len(data):
            return True
    return False


def _rtp_heuristic(b: Bytes, pl: np.ndarray, size: np.ndarray, captured: np.ndarray) -> np.ndarray:
    """tshark's RTP heuristic beyond the version: not payload types 72..76 (RTCP's), CSRCs and
    header extension within the datagram, a padding count that fits."""
    b0 = b.u8(pl)
    header = 12 + 4 * (b0 & 15)
    extended = (b0 & 0x10) != 0
    ext_ok = ~extended | (captured - header >= 4)
    header = np.where(extended, header + 4 + 4 * b.u16(pl + header + 2), header)
    pt = b.u8(pl + 1) & 0x7F
    padding = b.u8(pl + size - 1)
    padded = ((b0 & 0x20) != 0) & (captured == size)
    pad_ok = ~padded | ((padding != 0) & (size - header >= padding))
    return ((pt < 72) | (pt > 76)) & ext_ok & (size >= header) & pad_ok


NAMES = ["udp", "rtp", "rtcp", "stun", "dtls", "sip", "dns", "mdns", "tcp", "http", "tls"]
CODE = {name: i for i, name in enumerate(NAMES)}


@dataclass
class Flows:
    """Addresses, ports and payload (start, reported size, captured size) of some packets."""

    src: np.ndarray
    dst: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    pl: np.ndarray
    size: np.ndarray
    captured: np.ndarray


def _classify_udp(b: Bytes, f: Flows, udp_ports: dict[int, str]) -> np.ndarray:
    """tshark's choice of dissector for UDP payloads, as codes of ``NAMES`` (-1: plain udp)."""
    src, dst, sport, dport, pl, size, captured = vars(f).values()
    n = len(pl)
    code = np.full(n, -1, np.int64)
    b0, b1 = b.u8(pl), b.u8(pl + 1)
    v2 = (b0 >> 6 == 2) & (captured >= 2)
    # RFC 5761: with the marker bit, payload types 64..95 are RTCP's: RTP hands them over
    rtcp_in_rtp = (b1 >= 0x80 + 64) & (b1 <= 0x80 + 95)
    as_rtp = np.where(rtcp_in_rtp, CODE["rtcp"], CODE["rtp"])
    sip = np.zeros(n, bool)
    maybe = np.flatnonzero((b0 >= 0x41) & (b0 <= 0x5A) | (sport == 5060) | (dport == 5060))
    for i in maybe:  # few packets start with an upper-case letter: confirm by the first line
        head = b.buf[pl[i] : pl[i] + min(int(captured[i]), 512)].tobytes()
        keepalive = head in (b"\r\n", b"\r\n\r\n") and 5060 in (sport[i], dport[i])
        sip[i] = keepalive or bool(SIP_START.match(head))

    def decide(mask: np.ndarray, value: np.ndarray | int) -> None:
        take = mask & (code == -1)
        code[take] = value[take] if isinstance(value, np.ndarray) else value

    # 1. conversations that SIP's SDP set up, from the frame that completed the offer/answer
    rtp_conv, rtcp_conv = _sdp_conversations(
        [(int(i), b.buf[pl[i] : pl[i] + captured[i]].tobytes()) for i in np.flatnonzero(sip)]
    )
    frame = np.arange(n)
    for conversations, value in ((rtp_conv, as_rtp), (rtcp_conv, CODE["rtcp"])):
        for (address, port), first in conversations.items():
            on = ((src == address) & (sport == port)) | ((dst == address) & (dport == port))
            decide(on & (frame >= first) & v2, value)
    # 2. fixed and decode-as ports, the lower port first; SIP's dissector refuses non-SIP
    low, high = np.minimum(sport, dport), np.maximum(sport, dport)
    for ports in (low, high):
        for port, name in udp_ports.items():
            on = ports == port
            if name == "rtp":
                decide(on & v2, as_rtp)
            elif name == "sip":
                decide(on & sip, CODE["sip"])
            elif name in CODE:
                decide(on, CODE[name])
            else:
                decide(on, -2)  # named after a protocol outside the study's list
    # 3. heuristics, in tshark's order
    stun = (size >= 20) & (b0 < 4) & (b.u16(pl + 2) + 20 == size) & (b.u32(pl + 4) == 0x2112A442)
    decide(stun & (captured >= 20), CODE["stun"])
    decide(sip, CODE["sip"])
    decide(v2 & _rtp_heuristic(b, pl, size, captured), as_rtp)
    decide(v2 & np.isin(b1, RTCP_HEURISTIC_TYPES) & (size % 4 == 0), CODE["rtcp"])
    dtls = np.flatnonzero((code == -1) & (b0 >= 20) & (b0 <= 25) & (captured == size))
    for i in dtls:
        if _dtls_records(b.buf[pl[i] : pl[i] + captured[i]].tobytes()):
            code[i] = CODE["dtls"]
    return code


def _rtp_fields(b: Bytes, pl: np.ndarray, end: np.ndarray, ext_id: int) -> dict[str, np.ndarray]:
    """Header fields, RFC 6464 level byte and payload span of RTP packets starting at ``pl``."""
    n = len(pl)
    b0 = b.u8(pl)
    header_end = pl + 12 + 4 * (b0 & 15)
    extended = (b0 & 0x10) != 0
    profile, words = b.u16(header_end), b.u16(header_end + 2)
    ext_start = header_end + 4
    ext_end = ext_start + 4 * words
    payload = np.where(extended, ext_end, header_end)
    padding = np.where((b0 & 0x20) != 0, b.u8(end - 1), 0)
    level = np.full(n, -1, np.int64)
    # tshark reads an extension only when it lies within the packet
    fits = extended & (words > 0) & (ext_end <= end)
    _one_byte(b, np.flatnonzero(fits & (profile == 0xBEDE)), ext_start, ext_end, ext_id, level)
    _two_byte(
        b, np.flatnonzero(fits & (profile & 0xFFF0 == 0x1000)), ext_start, ext_end, ext_id, level
    )
    return {
        "pt": b.u8(pl + 1) & 0x7F,
        "seq": b.u16(pl + 2),
        "ssrc": b.u32(pl + 8),
        "level": level,
        "payload": payload,
        "payload_end": np.where(fits | ~extended, end - padding, -1),
    }


def _one_byte(
    b: Bytes, rows: np.ndarray, start: np.ndarray, end: np.ndarray, ext_id: int, level: np.ndarray
) -> None:
    """RFC 8285 one-byte elements, walked as tshark does: zero bytes are padding, id 15 stops,
    an element running past the extension stops; the first element with ``ext_id`` counts."""
    at, stop = start[rows].copy(), end[rows]
    while len(rows):
        pad = b.u8(at) == 0
        while pad.any():  # skip padding
            at = np.where(pad, at + 1, at)
            pad &= at < stop
            pad &= b.u8(at) == 0
        head = b.u8(at)
        length = (head & 15) + 1
        ok = (at < stop) & (head >> 4 != 15) & (at + length + 1 <= stop)
        hit = ok & (head >> 4 == ext_id) & (level[rows] == -1)
        level[rows[hit]] = b.u8(at[hit] + 1)
        at = at + 1 + length
        keep = ok & (at < stop)
        rows, at, stop = rows[keep], at[keep], stop[keep]


def _two_byte(
    b: Bytes, rows: np.ndarray, start: np.ndarray, end: np.ndarray, ext_id: int, level: np.ndarray
) -> None:
    """RFC 8285 two-byte elements. tshark adds no data field for a zero-length element, so its
    ids and data no longer pair up and the level of such a packet is left unknown (-2)."""
    at, stop = start[rows].copy(), end[rows]
    while len(rows):
        live = at + 2 < stop
        pad = live & (b.u8(at) == 0)
        while pad.any():
            live &= ~(pad & (at + 2 >= stop))
            pad &= live
            at = np.where(pad, at + 1, at)
            pad &= b.u8(at) == 0
        ident, length = b.u8(at), b.u8(at + 1)
        unpaired = live & ((length == 0) | (at + 2 + length > stop))
        level[rows[unpaired]] = -2
        hit = live & ~unpaired & (ident == ext_id) & (level[rows] == -1)
        level[rows[hit]] = b.u8(at[hit] + 2)
        at = at + 2 + length
        keep = live & ~unpaired & (at + 2 < stop)
        rows, at, stop = rows[keep], at[keep], stop[keep]


def _http_start(data: bytes) -> bool:
    """tshark's HTTP heuristic: a complete first line that starts or ends with ``HTTP/1.``."""
    cut = [i for i in (data.find(b"\r"), data.find(b"\n")) if i >= 0]
    if not cut or min(cut) == 8:
        return False
    line = data[: min(cut)]
    return line[:7].upper() == b"HTTP/1." or line[-8:-1].upper() == b"HTTP/1."


def _http_messages(buffer: bytes) -> tuple[list[tuple[str, str]], int]:
    """Complete HTTP messages at the start of ``buffer``: (method, uri) of each (empty for a
    response) and the bytes they take; an incomplete message waits for more segments."""
    found, used = [], 0
    while used < len(buffer):
        head_end = buffer.find(b"\r\n\r\n", used)
        if head_end < 0:
            break
        head = buffer[used:head_end].decode("latin-1")
        lines = head.split("\r\n")
        length = re.search(r"(?im)^content-length:\s*(\d+)", head)
        body = int(length[1]) if length else 0
        end = head_end + 4 + body
        if re.search(r"(?im)^transfer-encoding:\s*chunked", head):
            last = buffer.find(b"\r\n0\r\n\r\n", head_end + 2)
            end = last + 7 if last >= 0 else len(buffer) + 1
        if end > len(buffer):
            break
        match = HTTP_METHOD_LINE.match(lines[0].encode("latin-1"))
        found.append((match[1].decode(), match[2].decode()) if match else ("", ""))
        used = end
    return found, used


def _classify_tcp(
    b: Bytes, f: Flows, http_ports: set[int]
) -> list[tuple[int, int, str | None, str | None]]:
    """TCP segments in capture order: (row, code, HTTP methods, URIs) of the named ones."""
    src, dst, sport, dport, pl, size, _ = vars(f).values()
    streams: dict[tuple, bytes] = {}
    http_conversations: set[tuple] = set()
    out = []
    for i in range(len(pl)):
        if size[i] <= 0:
            continue
        data = b.buf[pl[i] : pl[i] + size[i]].tobytes()
        key = (src[i], sport[i], dst[i], dport[i])
        conversation = frozenset(((src[i], sport[i]), (dst[i], dport[i])))
        by_port = sport[i] in http_ports or dport[i] in http_ports
        if not (by_port or conversation in http_conversations):
            if _http_start(data):
                http_conversations.add(conversation)
            elif data[0] in (20, 21, 22, 23) and data[1] == 3 and data[2] <= 4:
                out.append((i, CODE["tls"], None, None))
                continue
            else:
                continue
        buffer = streams.get(key, b"") + data
        if not buffer.startswith(tuple(m.encode() for m in HTTP_METHODS)) and not buffer.startswith(
            b"HTTP/"
        ):
            # data outside a message: with a whole line tshark names it HTTP continuation,
            # without one it waits for more (and it stays "tcp")
            whole = b"\n" in buffer or b"\r" in buffer
            streams[key] = b"" if whole else buffer
            if whole:
                out.append((i, CODE["http"], None, None))
            continue
        messages, used = _http_messages(buffer)
        streams[key] = buffer[used:]
        if messages:
            requests = [m for m in messages if m[0]]
            methods = ";".join(m for m, _ in requests) or None
            uris = ";".join(u for _, u in requests) or None
            out.append((i, CODE["http"], methods, uris))
    return out


HTTP_METHODS = ["GET ", "POST ", "PUT ", "DELETE ", "HEAD ", "OPTIONS ", "PATCH ", "CONNECT "]


def packet_table(
    pcap: str | Path, audio_level_ext_id: int = 1, decode_as: list[str] | None = None
) -> pd.DataFrame:
    """One row per packet with extract.PACKET_COLUMNS but ``t`` and ``direction``."""
    path = Path(pcap)
    if not path.is_file():
        raise DataError(f"{pcap}: capture file missing")
    r = read_records(path)
    b, n = Bytes(r.buf), len(r.start)
    l3, etype = _link_layer(b, r)
    net = _ip_layer(b, l3, etype, r.start + r.caplen)
    b = _reassemble(b, net, l3)
    _icmp_errors(b, net)
    udp_rules, http_rules = _decode_as(decode_as)
    code = np.full(n, -1, np.int64)
    sport, dport, payload_len = (np.full(n, -1, np.int64) for _ in range(3))
    src, dst = net.src, net.dst
    udp = np.flatnonzero(net.proto == 17)
    l4 = net.l4[udp]
    sport[udp], dport[udp], ulen = b.u16(l4), b.u16(l4 + 2), b.u16(l4 + 4)
    payload_len[udp] = ulen - 8
    pl = l4 + 8
    captured = np.clip(np.minimum(net.end[udp], l4 + ulen) - pl, 0, None)
    flows = Flows(src[udp], dst[udp], sport[udp], dport[udp], pl, ulen - 8, captured)
    code[udp] = _classify_udp(b, flows, UDP_PORTS | udp_rules)
    code[udp[code[udp] == -1]] = CODE["udp"]
    tcp = np.flatnonzero(net.proto == 6)
    l4 = net.l4[tcp]
    sport[tcp], dport[tcp] = b.u16(l4), b.u16(l4 + 2)
    offset = (b.u8(l4 + 12) >> 4) * 4
    payload_len[tcp] = net.l4_len[tcp] - offset
    code[tcp] = CODE["tcp"]
    methods = np.full(n, None, object)
    uris = np.full(n, None, object)
    size = np.minimum(payload_len[tcp], net.end[tcp] - l4 - offset)
    flows = Flows(src[tcp], dst[tcp], sport[tcp], dport[tcp], l4 + offset, size, size)
    named = _classify_tcp(b, flows, HTTP_TCP_PORTS | http_rules)
    for i, value, method, uri in named:
        code[tcp[i]], methods[tcp[i]], uris[tcp[i]] = value, method, uri
    protocol = np.where(code >= 0, np.array(NAMES, dtype=object)[np.maximum(code, 0)], net.name)

    rtp = np.flatnonzero((code == CODE["rtp"]) & (payload_len >= 12))
    rtp = rtp[np.isin(rtp, udp)]
    fields = _rtp_fields(
        b, net.l4[rtp] + 8, net.l4[rtp] + 8 + _captured(net, b, rtp), audio_level_ext_id
    )
    pt, seq, level = (np.full(n, np.nan) for _ in range(3))
    pt[rtp], seq[rtp] = fields["pt"], fields["seq"]
    ssrc = np.full(n, None, object)
    values, inverse = np.unique(fields["ssrc"], return_inverse=True)  # few streams
    ssrc[rtp] = np.array([f"0x{v:08x}" for v in values], dtype=object)[inverse.ravel()]
    known = fields["level"] >= 0
    level[rtp[known]] = fields["level"][known]
    rms = _payload_rms(b, fields, rtp, n)
    as_int = pd.Int64Dtype()
    text = pd.StringDtype()
    return pd.DataFrame(
        {
            "time_epoch": r.time,
            "protocol": protocol,
            "src": pd.array(src, dtype=text),
            "dst": pd.array(dst, dtype=text),
            "sport": pd.array(np.where(sport >= 0, sport, np.nan), dtype=as_int),
            "dport": pd.array(np.where(dport >= 0, dport, np.nan), dtype=as_int),
            "frame_len": pd.array(r.wirelen, dtype=as_int),
            "payload_len": pd.array(np.where((sport >= 0), payload_len, np.nan), dtype=as_int),
            "rtp_pt": pd.array(pt, dtype=as_int),
            "rtp_ssrc": pd.array(ssrc, dtype=text),
            "rtp_seq": pd.array(seq, dtype=as_int),
            "audio_level_dbov": -(level.copy() % 128),
            "voice_activity": np.floor(level / 128),
            "payload_rms": rms,
            "http_method": pd.array(methods, dtype=text),
            "http_uri": pd.array(uris, dtype=text),
        }
    )


def _captured(net: Network, b: Bytes, rows: np.ndarray) -> np.ndarray:
    """Captured bytes of the UDP payload of ``rows``."""
    l4 = net.l4[rows]
    return np.clip(np.minimum(net.end[rows], l4 + b.u16(l4 + 4)) - l4 - 8, 0, None)


G711_PAYLOAD_TYPES = {0: "pcmu", 8: "pcma"}


def _payload_rms(b: Bytes, fields: dict, rtp: np.ndarray, n: int) -> np.ndarray:
    """RMS of the G.711 samples of each plain pcmu/pcma packet, all packets at once."""
    from reallymuted.analysis.extract import G711

    rms = np.full(n, np.nan)
    start, stop = fields["payload"], fields["payload_end"]
    for pt, codec in G711_PAYLOAD_TYPES.items():
        rows = np.flatnonzero((fields["pt"] == pt) & (stop > start))
        if not len(rows):
            continue
        lengths = stop[rows] - start[rows]
        first = np.repeat(start[rows] - np.cumsum(lengths) + lengths, lengths)
        index = first + np.arange(lengths.sum())
        squares = G711[codec][b.buf[index]] ** 2
        sums = np.add.reduceat(squares, np.cumsum(lengths) - lengths)
        rms[rtp[rows]] = np.sqrt(sums / lengths)
    return rms


def compare_readers(pcap: str | Path, limit: int = 20, **options: object) -> list[str]:
    """Field-by-field differences between the native reader and tshark on one capture, as
    ``"packet N column: native=… tshark=…"`` lines (at most ``limit``); [] when they agree.

    The G.711 RMS may differ in the last bits (the sums run in another order): it is compared
    with a relative tolerance of 1e-9; every other field must be equal.
    """
    from reallymuted.analysis.extract import read_packets

    tables, errors = {}, {}
    for reader in ("native", "tshark"):
        try:
            tables[reader] = read_packets(pcap, 0.0, reader=reader, **options)
        except DataError as error:  # an unreadable file must be refused by both
            errors[reader] = str(error)
    if errors:
        return [] if len(errors) == 2 else [f"{pcap}: only one reader failed: {errors}"]
    native, oracle = tables["native"], tables["tshark"]
    if len(native) != len(oracle):
        return [f"{pcap}: {len(native)} packets native, {len(oracle)} tshark"]
    found = []
    for column in oracle.columns:
        a, o = native[column].reset_index(drop=True), oracle[column].reset_index(drop=True)
        missing = a.isna().to_numpy() & o.isna().to_numpy()
        if column == "payload_rms":
            same = np.isclose(a.to_numpy(float), o.to_numpy(float), rtol=1e-9, atol=0)
        else:
            same = (a.astype(object) == o.astype(object)).fillna(False).to_numpy(bool)
        for i in np.flatnonzero(~(same | missing)):
            found.append(f"{pcap}: packet {i + 1} {column}: native={a[i]!r} tshark={o[i]!r}")
    return found[:limit] + ([f"… {len(found) - limit} more"] if len(found) > limit else [])
