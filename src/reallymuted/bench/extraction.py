"""Benchmark of packet extraction: the native pcapng reader against tshark -T fields."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from reallymuted.io import write_json


def synthetic_rtp_pcap(path: Path, packets: int) -> None:
    """A pcapng as dumpcap writes it on the testbed's loopback (Ethernet, nanosecond times) of
    a WebRTC-like call: Opus RTP both ways with the RFC 6464 level and two other one-byte
    header extensions, RTCP muxed on the RTP ports, STUN consent checks, and an HTTP
    telemetry POST over TCP now and then (for parser throughput only)."""
    import struct

    def block(kind: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    def frame(proto: int, sport: int, dport: int, payload: bytes, tcp_seq: int = 0) -> bytes:
        if proto == 17:
            l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        else:
            l4 = struct.pack("!HHIIBBHHH", sport, dport, tcp_seq, 1, 0x50, 0x18, 512, 0, 0)
            l4 += payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0,
                         b"\x7f\x00\x00\x01", b"\x7f\x00\x00\x01")  # fmt: skip
        return bytes(12) + b"\x08\x00" + ip + l4

    ports = (45155, 53288)  # the two peers' RTP ports, one odd, as ICE picks them
    post = (b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1:8090\r\nContent-Type: application/json"
            b"\r\nContent-Length: 64\r\n\r\n" + b"{" + b" " * 62 + b"}")  # fmt: skip
    with path.open("wb") as out:
        out.write(block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
        tsresol = struct.pack("<HHB3x", 9, 1, 9) + bytes(4)  # if_tsresol 9: nanoseconds
        out.write(block(1, struct.pack("<HHI", 1, 0, 262144) + tsresol))
        for i in range(packets):
            ns = 1_700_000_000 * 10**9 + i * 10_000_000
            side = i % 2
            sport, dport = ports[side], ports[1 - side]
            if i % 100 == 7:  # RTCP sender report on the RTP port (rtcp-mux)
                data = struct.pack("!BBHI", 0x80, 200, 6, 0xCAFE + side) + bytes(20)
                data += bytes(20)  # SRTCP index and AES-GCM tag
            elif i % 250 == 11:  # STUN binding request (ICE consent freshness)
                data = struct.pack("!HHI", 1, 32, 0x2112A442) + bytes(12) + bytes(32)
            elif i % 500 == 13:  # a telemetry POST to the collector on TCP 8090
                data = b""
            else:  # Opus RTP with the level (id 1), abs-send-time (id 2), transport-cc (id 3)
                seq = i // 2 & 0xFFFF
                data = struct.pack("!BBHII", 0x90, 111, seq, i * 480, 0xCAFE + side)
                data += struct.pack("!HH", 0xBEDE, 3) + bytes([0x10, 0x80 | (i % 128)])
                data += bytes([0x22, 1, 2, 3, 0x31, 0, seq & 0xFF, 0, 0]) + bytes(60 + i % 40)
            if data:
                packet = frame(17, sport, dport, data)
            else:
                packet = frame(6, 41000 + side, 8090, post, tcp_seq=i)
            epb = struct.pack("<IIIII", 0, ns >> 32, ns & 0xFFFFFFFF, len(packet), len(packet))
            out.write(block(6, epb + packet))


def bench_extraction(out_dir: Path, packets: int = 100_000, repeats: int = 5) -> dict[str, Any]:
    """Packets per second of ``extract.read_packets`` (the native reader) against plain
    ``tshark -T fields`` with the same fields writing to /dev/null, side by side, best of N."""
    from reallymuted.analysis import extract

    with tempfile.TemporaryDirectory(prefix="reallymuted-bench-") as scratch:
        pcap = Path(scratch) / "call.pcapng"
        synthetic_rtp_pcap(pcap, packets)
        plain, ours = [], []
        for _ in range(repeats):  # alternate, so both see the same load on the machine
            start = time.perf_counter()
            with Path(os.devnull).open("wb") as sink:
                subprocess.run(
                    extract.tshark_command(pcap), stdout=sink, stderr=subprocess.DEVNULL, check=True
                )
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            table = extract.read_packets(pcap, start_epoch=1_700_000_000, client_ports={45155})
            ours.append(time.perf_counter() - start)
        assert len(table) == packets
        protocols = table["protocol"].value_counts().to_dict()
    baseline, measured = packets / min(plain), packets / min(ours)
    result = {
        "benchmark": "extraction_throughput",
        "what": f"{packets} packets (pcapng as dumpcap writes it: Opus RTP with the RFC 6464 "
        "level extension, RTCP, STUN, HTTP over TCP): extract.read_packets with the native "
        "reader (into the packet table) against tshark -T fields with the same fields writing "
        f"to /dev/null; packets per second, best of {repeats}, run alternately",
        "packets": packets,
        "protocols": protocols,
        "baseline": round(baseline),
        "measured": round(measured),
        "ratio": round(measured / baseline, 2),
        "tshark_s": [round(t, 3) for t in plain],
        "native_s": [round(t, 3) for t in ours],
        "target": "at least 2x tshark -T fields",
        "met": measured / baseline >= 2,
    }
    write_json(out_dir / "extraction_throughput.json", result)
    return result
