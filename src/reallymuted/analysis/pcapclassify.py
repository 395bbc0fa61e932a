"""Which protocol tshark names a UDP or TCP packet after, for the packet table's ``protocol``.

The classification reproduces what tshark 4.0 with ``rtp.heuristic_rtp:TRUE`` puts in
``frame.protocols``, for the protocols of ``extract.PROTOCOL_ORDER``, in tshark's order for UDP:
conversations SIP's SDP set up, then decode-as and fixed ports, then heuristics: STUN (length
and magic cookie), SIP (request or status line), RTP (version 2, payload type not 72..76,
CSRCs, extension and padding within the datagram: 4.0's heuristic has no even-port test),
RTCP (SR/RR/BYE/APP/PSFB first, length a multiple of 4), DTLS (records ending exactly at the
datagram's end). RTP with the marker bit and payload type 64..95 is handed to RTCP
(``rtp:rtcp``, no RTP fields), as tshark does for rtcp-mux. TCP: HTTP ports, decode-as ports
and ports whose dissector takes any payload, the lower port first; then the HTTP first-line
heuristic (which then holds for the conversation); an HTTP message is
named on the segment that completes it (headers to the empty line, then Content-Length or
chunked body), a segment that leaves it incomplete stays ``tcp``, data outside a message is
HTTP continuation when binary or once its first line is whole, if the conversation had a
request or the line has a colon; retransmissions and sequence gaps are followed as tshark's
sequence analysis and reassembly follow them (``classify_tcp``); a segment starting with a
TLS record header is ``tls``. Packets are vectorised per heuristic; only SIP candidates (an
upper-case first byte or port 5060), DTLS candidates and TCP payloads are read one by one.

Known differences from tshark (none occurs in the study's captures, see tests/test_pcapread.py):

* only these UDP ports are known: 53 dns, 3478 stun, 5060 sip, 5353 mdns, 853/2221/5684/5868
  dtls, and the ephemeral ports whose dissector takes any payload (``tshark_ports``);
  tshark knows ~330, so traffic on another registered port below 32768 may be named by
  tshark after that port's protocol; the other ~60 UDP heuristics of tshark (WireGuard,
  QUIC, ...) are not tried;
* TCP: of tshark's ~570 registered ports only its HTTP ports and the ephemeral ports whose
  dissector takes any payload (``tshark_ports``) are known: HTTP or TLS to a server on
  another registered port is named as if the port were not;
* TCP: two kinds of segment starting before the highest sequence number seen, which tshark
  tells from retransmissions by time, are left out here like retransmissions: one out of
  order (within the connection's first round-trip time, or 3 ms, of that highest one),
  which tshark still adds to the message it belongs to, so that a later segment may
  complete it; and a fast retransmission (two duplicate ACKs, within 20 ms), which tshark
  dissects (a loopback capture does not reorder segments; a fast retransmission follows a
  segment the kernel dropped); an HTTP response without length ends with its segment; TLS
  is named per segment that starts with a record header, without reassembly;
* SDP-made RTP conversations are followed for IPv4 ``c=`` addresses only, from the frame
  whose SDP names them (tshark waits for the answer to apply an offer).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from reallymuted.analysis.pcapfile import Bytes
from reallymuted.io import DataError
from reallymuted.tshark_ports import TCP_CLAIMING_PORTS

UDP_PORTS = {53: "dns", 3478: "stun", 5060: "sip", 5353: "mdns"}
UDP_PORTS |= dict.fromkeys((853, 2221, 5684, 5868), "dtls")
HTTP_TCP_PORTS = {80, 3128, 3132, 5985, 8080, 8088, 11371, 1900, 2869, 2710}
RTCP_HEURISTIC_TYPES = [200, 201, 203, 204, 206]  # SR, RR, BYE, APP, PSFB may open a compound
SIP_START = re.compile(
    rb"^(?:[A-Z]+ \S+ SIP/2\.0|SIP/2\.0 \d{3}[^\r\n]*)\r?\n"
)  # a request or status line: what tshark's SIP heuristic looks for
HTTP_METHOD_LINE = re.compile(rb"^([A-Z-]+) (\S+) HTTP/1\.\d$")
HTTP_METHODS = ["GET ", "POST ", "PUT ", "DELETE ", "HEAD ", "OPTIONS ", "PATCH ", "CONNECT "]
HTTP_STARTS = (*(m.encode() for m in HTTP_METHODS), b"HTTP/")  # how a message's first line starts
# the names a UDP or TCP packet may get; the classifiers return their codes (indices)
NAMES = ["udp", "rtp", "rtcp", "stun", "dtls", "sip", "dns", "mdns", "tcp", "http", "tls"]
CODE = {name: i for i, name in enumerate(NAMES)}


def decode_as_ports(rules: list[str] | None) -> tuple[dict[int, str], set[int]]:
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


def classify_udp(b: Bytes, f: Flows, udp_ports: dict[int, str]) -> np.ndarray:
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


def _after(a: int, b: int) -> int:
    """``a - b`` for TCP sequence numbers (modulo 2**32, signed)."""
    return (a - b + 2**31) % 2**32 - 2**31


def _message_end(buffer: bytes) -> int | None:
    """The length of the incomplete HTTP message at the start of ``buffer`` when tshark knows
    it before the message is whole: headers complete, with a Content-Length (not chunked).
    Otherwise (headers incomplete, a chunked body, data outside a message) HTTP asks TCP for
    one more segment at a time, and None is returned."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0 or not buffer.startswith(HTTP_STARTS):
        return None
    head = buffer[:head_end].decode("latin-1")
    length = re.search(r"(?im)^content-length:\s*(\d+)", head)
    if not length or re.search(r"(?im)^transfer-encoding:\s*chunked", head):
        return None
    return head_end + 4 + int(length[1])


def _continuation(buffer: bytes, requested: bool) -> bool | None:
    """Whether tshark's HTTP names data outside a message (data after a hole, or after a
    message's end) HTTP continuation; None while it waits for the end of its first line.
    Binary data is named at once, and a line as soon as it is whole: when the conversation
    had a request, or when the line looks like a header (a colon). A leading CRLF is skipped."""
    text = buffer[2:] if buffer.startswith(b"\r\n") and len(buffer) > 3 else buffer
    if not 0x20 <= text[0] <= 0x7E:
        return requested
    line = re.match(rb"[^\r\n]*", text)[0]
    if len(line) == len(text):
        return None
    return requested or b":" in line


def classify_tcp(
    b: Bytes,
    f: Flows,
    http_ports: set[int],
    seq: np.ndarray,
    ack: np.ndarray,
    flags: np.ndarray,
    other_ports: Collection[int] = TCP_CLAIMING_PORTS,
) -> list[tuple[int, int, str | None, str | None]]:
    """TCP segments in capture order: (row, code, HTTP methods, URIs) of the named ones.
    ``other_ports`` belong to other dissectors (a decode-as rule to HTTP takes a port back).

    Each segment's sequence and acknowledgment numbers and flags follow each direction's
    stream as tshark 4.0's sequence analysis and reassembly do (tcp.desegment_tcp_streams
    on, tcp.reassemble_out_of_order off):

    * a segment starting before the highest sequence number seen (a retransmission, one out
      of order, one overlapping the stream's end), or one the peer has acknowledged already
      (a spurious retransmission), is handed to no dissector: it is plain tcp, and its bytes
      are not added to the stream, not even those beyond its end (added twice, a
      retransmission completed a large HTTP response early: seen on a served SDK bundle);
    * bytes missing from the stream (a sequence gap: a segment the capture lost or that
      comes later out of order; or the new bytes of a segment left out as above) are a hole
      tshark's reassembly never fills. An incomplete message whose end HTTP knew
      (Content-Length) then never completes: the segments up to that end stay tcp, and data
      after it in the same segment starts anew. Otherwise HTTP had asked for one more segment
      only, which the next one beyond the hole is not: it is dissected on its own, as if it
      began a message. (Taken as contiguous, a lost segment of a served script made the next
      response count as its body: likely why a CI run named 32 segments HTTP, tshark TCP.)
    * a SYN with another initial sequence number starts a new connection on the same ports.
    """
    src, dst, sport, dport, pl, size, _ = vars(f).values()
    streams: dict[tuple, bytes] = {}  # an incomplete message (or line-less data), per direction
    next_seq: dict[tuple, int] = {}  # the highest sequence number seen, per direction
    last_ack: dict[tuple, int] = {}
    broken: dict[tuple, int] = {}  # where a message that a hole broke ends, per direction
    http_conversations: set[tuple] = set()
    requested: set[tuple] = set()  # conversations in which HTTP named a request
    first_seq: dict[tuple, int] = {}  # the initial sequence number of a connection's SYN
    out = []
    for i in range(len(pl)):
        key, back = (src[i], sport[i], dst[i], dport[i]), (dst[i], dport[i], src[i], sport[i])
        conversation = frozenset(((src[i], sport[i]), (dst[i], dport[i])))
        # a SYN with another initial sequence number: tshark starts a new conversation
        if (flags[i] & 0x12) == 0x02 and first_seq.get(key) != seq[i]:
            first_seq[key] = seq[i]
            for state in (next_seq, last_ack, streams, broken):
                for direction in (key, back):
                    state.pop(direction, None)
            http_conversations.discard(conversation)
            requested.discard(conversation)
        if flags[i] & 0x10:  # ACK
            last_ack[key] = int(ack[i])
        if size[i] <= 0:
            continue
        data = b.buf[pl[i] : pl[i] + size[i]].tobytes()
        start, expected = int(seq[i]), next_seq.get(key)
        end = (start + int(size[i])) % 2**32
        ahead = 0 if expected is None else _after(start, expected)
        acked = last_ack.get(back)
        # tshark's retransmission, out of order (before the highest sequence number seen) or
        # spurious retransmission (acknowledged already): handed to no dissector
        left_out = ahead < 0 or (acked is not None and _after(end, acked) <= 0)
        if expected is None or _after(end, expected) > 0:
            next_seq[key] = end
            if ahead > 0 or left_out:  # a hole before the new bytes, or in them
                # the pending message loses those bytes: dropped (tshark dissects what comes
                # after the hole on its own), or broken up to its end if that was known
                pending = streams.pop(key, b"")
                length = _message_end(pending)
                if length is not None and key not in broken:
                    broken[key] = (expected - len(pending) + length) % 2**32
        if left_out:
            continue
        # tshark tries the lower port's dissector, then the higher one's, then heuristics
        low, high = sorted((int(sport[i]), int(dport[i])))
        owner = next((p for p in (low, high) if p in http_ports or p in other_ports), None)
        if owner is not None and owner not in http_ports:
            continue  # another dissector took it: never HTTP or TLS
        by_port = owner is not None
        if not (by_port or conversation in http_conversations):
            if _http_start(data):
                http_conversations.add(conversation)
            elif data[0] in (20, 21, 22, 23) and data[1] == 3 and data[2] <= 4:
                out.append((i, CODE["tls"], None, None))
                continue
            else:
                continue
        if key in broken:  # tcp up to the broken message's end; what follows starts anew
            inside = _after(broken[key], start)  # bytes of this segment in the broken message
            if inside >= len(data):
                continue
            del broken[key]
            data = data[max(inside, 0) :]
        buffer = streams.get(key, b"") + data
        if not buffer.startswith(HTTP_STARTS):
            named = _continuation(buffer, conversation in requested)
            streams[key] = buffer if named is None else b""
            if named:
                out.append((i, CODE["http"], None, None))
            continue
        messages, used = _http_messages(buffer)
        streams[key] = buffer[used:]
        if messages:
            requests = [m for m in messages if m[0]]
            if requests:
                requested.add(conversation)
            methods = ";".join(m for m, _ in requests) or None
            uris = ";".join(u for _, u in requests) or None
            out.append((i, CODE["http"], methods, uris))
    return out
