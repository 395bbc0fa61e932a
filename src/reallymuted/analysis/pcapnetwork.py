"""Link layers, IPv4/IPv6 and ICMP errors of packet records: each packet's addresses,
transport protocol and where its transport header and data are.

Link types: Ethernet (802.1Q / QinQ tags skipped), Linux cooked capture v1 and v2, raw IP
and BSD loopback. IPv6 extension headers are skipped. IPv4 and IPv6 fragments are
reassembled: the completing frame carries the datagram, the others are ``data``. An ICMP
error quoting a datagram is named after the quote and its ``src``/``dst`` list the outer then
the quoted address (``a;b``), as tshark prints repeated fields. Addresses are printed as
tshark prints them (IPv6 as glibc's inet_ntop, IPv4 tails included).

Known differences from tshark (none occurs in the study's captures, see tests/test_pcapread.py):

* an IP fragment with no payload is ``data`` here, ``ip`` in tshark;
* a non-IP frame, or an IP protocol other than UDP/TCP/ICMP, is named by a small table
  (arp, icmp, igmp, icmpv6, data) where tshark names its own last dissector.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address

import numpy as np

from reallymuted.analysis.pcapfile import Bytes, Records

IP_PROTOCOL_NAMES = {1: "icmp", 2: "igmp", 58: "icmpv6"}
ETHERTYPE_NAMES = {0x0806: "arp"}


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


def link_layer(b: Bytes, r: Records) -> tuple[np.ndarray, np.ndarray]:
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


def ip_layer(b: Bytes, pos: np.ndarray, etype: np.ndarray, end: np.ndarray) -> Network:
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
    for ethertype, name in ETHERTYPE_NAMES.items():
        net.name[etype == ethertype] = name
    return net


def reassemble(b: Bytes, net: Network, frames: np.ndarray) -> Bytes:
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


def icmp_errors(b: Bytes, net: Network) -> None:
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
    inner = ip_layer(b, inner_at, np.where(version == 4, 0x0800, 0x86DD), net.end[rows])
    quoted = inner.version > 0
    rows, inner_rows = rows[quoted], np.flatnonzero(quoted)
    for field in ("proto", "l4", "l4_len", "end", "name"):
        getattr(net, field)[rows] = getattr(inner, field)[inner_rows]
    net.proto[rows] = np.where(net.proto[rows] == -2, -1, net.proto[rows])
    for field in ("src", "dst"):
        outer, quote = getattr(net, field)[rows], getattr(inner, field)[inner_rows]
        getattr(net, field)[rows] = [f"{o};{q}" for o, q in zip(outer, quote, strict=True)]
