"""Record tests/data/extract/rtp_levels.pcapng: a real tshark capture of a tiny RTP exchange.

Run as root:  unshare -n ../../../.venv/bin/python make_rtp_capture.py
Inside a fresh network namespace (only loopback, so nothing else is captured) it starts tshark on
lo, then sends from UDP port 41000 to 41002, at 50 packets/s: 1 s of "unmuted" PCMU packets
(160-byte payload, RFC 6464 audio level 30 -dBov in a one-byte header extension, id 1), then 1 s
of "muted" packets (audio level 127, payload all 0xFF), and from 41002 back to 41000 one RTCP-like
non-RTP datagram per 0.5 s. Finally one HTTP POST with a JSON body to 127.0.0.1:41080.
The expected counts are asserted by tests/test_extract.py.
"""

import http.server
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

OUT = Path(__file__).with_name("rtp_levels.pcapng")
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
tshark = subprocess.Popen(
    ["tshark", "-q", "-i", "lo", "-w", str(OUT), "-f", "udp or tcp port 41080"],
    stderr=subprocess.DEVNULL,
)
time.sleep(2.0)  # tshark needs a moment before it captures


def rtp_packet(seq: int, level: int, muted: bool) -> bytes:
    header = struct.pack("!BBHII", 0x90, 0, seq, seq * 160, 0x1234ABCD)  # V=2, X=1, PT=0
    # RFC 5285 one-byte extension block: 0xBEDE, length 1 word; element id 1, len 0 (= 1 byte)
    extension = struct.pack("!HHB3x", 0xBEDE, 1, (1 << 4) | 0)[:5] + bytes([0x80 | level, 0, 0])
    payload = b"\xff" * 160 if muted else bytes((i * 7) % 256 for i in range(160))
    return header + extension + payload


sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sender.bind(("127.0.0.1", 41000))
peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
peer.bind(("127.0.0.1", 41002))
for seq in range(100):
    muted = seq >= 50
    sender.sendto(rtp_packet(seq, 127 if muted else 30, muted), ("127.0.0.1", 41002))
    if seq % 25 == 0:
        peer.sendto(b"\x81\xc9\x00\x01hello", ("127.0.0.1", 41000))
    time.sleep(0.02)


class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


server = http.server.HTTPServer(("127.0.0.1", 41080), Sink)
threading.Thread(target=server.handle_request, daemon=True).start()
body = b'{"telemetrics":[{"t":"wmequality","v":{"gzipb64data":"x"}}]}'
with socket.create_connection(("127.0.0.1", 41080)) as conn:
    conn.sendall(
        b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    conn.recv(1024)
time.sleep(1.0)
tshark.send_signal(2)
tshark.wait()
print(OUT, OUT.stat().st_size)
