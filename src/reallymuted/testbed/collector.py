"""The telemetry collector: the testbed's stand-in for a vendor's telemetry server.

A testbed profile that models telemetry (``webex-2021``, :mod:`reallymuted.testbed.drivers.profile`)
POSTs its records here over plain HTTP, inside the session's network namespace. The collector
answers as a server would and logs every request it receives, whole, to a JSON-lines file that
becomes the session's ``collector.jsonl``. That makes it a second witness of what left the
client, independent of the packet capture: the capture holds the bytes on the wire, the
collector what a server actually received, and the telemetry table
(:mod:`reallymuted.analysis.telemetry.sessions`) requires the two to agree record for record.

Log lines, ``t`` on the session clock (``CLOCK_MONOTONIC - t0``, like every other witness):

* ``{"t", "event": "listening", "address", "port", "pid"}`` once it accepts connections;
* ``{"t", "event": "request", "epoch", "client", "method", "path", "version", "headers",
  "bytes", "sha256", "body" | "body_b64", "status"}`` per request, written once the body has
  been read and before the answer goes out (``client`` is ``ip:port``: the TCP flow in the
  capture; ``headers`` are ``[name, value]`` pairs in the order received; the body as text when
  it is UTF-8, else base64);
* ``{"t", "event": "error", "client", "message"}`` for a request it could not parse;
* ``{"t", "event": "stopped", "requests"}`` on SIGTERM/SIGINT.

Answers: ``OPTIONS`` gets a CORS preflight answer (the meeting page is served from another
port, so a browser asks before POSTing JSON), ``POST`` gets ``200 {"status":"ok"}``, anything
else ``404``; every answer allows any origin. Run as
``python -m reallymuted.testbed.collector --port P --out FILE --t0 T0``. Only the standard library,
so it starts fast.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.server
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

MAX_BODY_BYTES = 16 << 20  # a telemetry record is a few kB; refuse anything absurd
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "content-type",
    "Access-Control-Max-Age": "600",
}


class CollectorLog:
    """``collector.jsonl`` being written: one JSON object a line, flushed at once."""

    def __init__(self, path: Path, t0: float) -> None:
        self.t0 = t0
        self.fh = path.open("a", buffering=1)
        self.lock = threading.Lock()
        self.requests = 0

    def write(self, event: str, **fields: Any) -> None:
        row = {"t": round(time.monotonic() - self.t0, 6), "event": event, **fields}
        with self.lock:
            self.fh.write(json.dumps(row) + "\n")
            if event == "request":
                self.requests += 1

    def close(self) -> None:
        with self.lock:
            self.fh.close()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # a keep-alive connection must not hold up the stop
    log: CollectorLog


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as browsers use it
    server: _Server
    timeout = 60  # an idle keep-alive connection is dropped after this

    def _client(self) -> str:
        host, port = self.client_address[:2]
        return f"{host}:{port}"

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers, then the empty line
                        pass
                    return b"".join(parts)
                total += size
                if total > MAX_BODY_BYTES:
                    raise ValueError("body too large")
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise ValueError("body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        epoch = time.time()
        try:
            body = self._read_body()
        except ValueError as exc:
            self.server.log.write("error", client=self._client(), message=str(exc))
            self.close_connection = True
            self._answer(413, b"")
            return
        if self.command == "OPTIONS":
            status, answer = 204, b""
        elif self.command == "POST":
            status, answer = 200, b'{"status":"ok"}'
        else:
            status, answer = 404, b""
        record: dict[str, Any] = {
            "epoch": round(epoch, 6),
            "client": self._client(),
            "method": self.command,
            "path": self.path,
            "version": self.request_version,
            "headers": [[name, value] for name, value in self.headers.items()],
            "bytes": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        try:
            record["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            record["body_b64"] = base64.b64encode(body).decode("ascii")
        record["status"] = status
        self.server.log.write("request", **record)
        self._answer(status, answer)

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        for name, value in CORS.items():
            self.send_header(name, value)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    do_POST = do_GET = do_PUT = do_OPTIONS = do_HEAD = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:
        """The JSON log is the record; the standard access log would only duplicate it."""

    def log_error(self, format: str, *args: Any) -> None:
        self.server.log.write("error", client=self._client(), message=format % args)


def make_server(port: int, out: Path, t0: float, host: str = "127.0.0.1") -> _Server:
    """A bound collector (not yet serving) logging to ``out``; ``port`` 0 picks a free one."""
    server = _Server((host, port), _Handler)
    server.log = CollectorLog(out, t0)
    return server


def serve(port: int, out: Path, t0: float, host: str = "127.0.0.1") -> int:
    """Serve until SIGTERM/SIGINT, then log ``stopped``; the number of requests logged."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    server = make_server(port, out, t0, host)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    address, bound = server.server_address[:2]
    server.log.write("listening", address=address, port=bound, pid=os.getpid())
    while not stop.wait(0.2):
        pass
    server.shutdown()
    thread.join()
    server.server_close()
    requests = server.log.requests
    server.log.write("stopped", requests=requests)
    server.log.close()
    return requests


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reallymuted.testbed.collector")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="the JSON-lines log")
    parser.add_argument("--t0", type=float, required=True, help="session start, CLOCK_MONOTONIC")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    serve(args.port, args.out, args.t0, args.host)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
