"""A vectorised pcap/pcapng reader giving the packet table that ``tshark -T fields`` gives.

Why: a session's extraction was bound by tshark's full dissection (~50 k packets/s). The
study needs a few header fields, so the records are walked once in Python and every field is
then read for all packets at once with numpy gathers over the file's bytes; only rare packets
(IP fragments, ICMP errors, TCP payload, SIP, DTLS candidates) go through Python one by one.

The reader is four steps, one module each:

* :mod:`~reallymuted.analysis.pcapfile`: pcap/pcapng records (where, when, which link);
* :mod:`~reallymuted.analysis.pcapnetwork`: link layers, IPv4/IPv6 with fragments
  reassembled, ICMP errors named after the datagram they quote;
* :mod:`~reallymuted.analysis.pcapclassify`: the protocol tshark names each UDP/TCP packet
  after (SDP-made conversations, ports, decode-as, heuristics; HTTP messages);
* here: UDP and TCP ports and lengths, the RTP header fields, the RFC 6464 audio level from
  one- or two-byte header extensions (RFC 8285) and the RMS of G.711 payloads.

tshark (``extract.read_packets(..., reader="tshark")``) stays the oracle:
:func:`reallymuted.analysis.readercheck.compare_readers` compares the two field by field.
The known differences from tshark are listed in each module's docstring, next to the logic
they come from; none occurs in the study's captures (see tests/test_pcapread.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reallymuted.analysis import g711
from reallymuted.analysis.pcapclassify import (
    CODE,
    HTTP_TCP_PORTS,
    NAMES,
    UDP_PORTS,
    Flows,
    classify_tcp,
    classify_udp,
    decode_as_ports,
)
from reallymuted.analysis.pcapfile import Bytes, read_records
from reallymuted.analysis.pcapnetwork import Network, icmp_errors, ip_layer, link_layer, reassemble
from reallymuted.io import DataError
from reallymuted.tshark_ports import UDP_CLAIMING_PORTS


def packet_table(
    pcap: str | Path, audio_level_ext_id: int = 1, decode_as: list[str] | None = None
) -> pd.DataFrame:
    """One row per packet with extract.PACKET_COLUMNS but ``t`` and ``direction``."""
    path = Path(pcap)
    if not path.is_file():
        raise DataError(f"{pcap}: capture file missing")
    r = read_records(path)
    b, n = Bytes(r.buf), len(r.start)
    l3, etype = link_layer(b, r)
    net = ip_layer(b, l3, etype, r.start + r.caplen)
    b = reassemble(b, net, l3)
    icmp_errors(b, net)
    udp_rules, http_rules = decode_as_ports(decode_as)
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
    code[udp] = classify_udp(b, flows, UDP_CLAIMING_PORTS | UDP_PORTS | udp_rules)
    code[udp[code[udp] < 0]] = CODE["udp"]  # -2: after a protocol outside the list, also udp
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
    header = (b.u32(l4 + 4), b.u32(l4 + 8), b.u8(l4 + 13))  # sequence, acknowledgment, flags
    named = classify_tcp(b, flows, HTTP_TCP_PORTS | http_rules, *header)
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


def _payload_rms(b: Bytes, fields: dict, rtp: np.ndarray, n: int) -> np.ndarray:
    """RMS of the G.711 samples of each plain pcmu/pcma packet, all packets at once."""
    rms = np.full(n, np.nan)
    start, stop = fields["payload"], fields["payload_end"]
    for pt, codec in g711.PAYLOAD_TYPES.items():
        rows = np.flatnonzero((fields["pt"] == pt) & (stop > start))
        if not len(rows):
            continue
        lengths = stop[rows] - start[rows]
        first = np.repeat(start[rows] - np.cumsum(lengths) + lengths, lengths)
        index = first + np.arange(lengths.sum())
        squares = g711.DECODE[codec][b.buf[index]] ** 2
        sums = np.add.reduceat(squares, np.cumsum(lengths) - lengths)
        rms[rtp[rows]] = np.sqrt(sums / lengths)
    return rms


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
