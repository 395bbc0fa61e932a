"""The telemetry collector beside a page: for drivers whose page sends records somewhere.

The collector (:mod:`reallymuted.testbed.collector`) runs in the session's namespace on
``collector_port`` and logs every request it receives; its log is the session's extra evidence
file ``collector.jsonl``. The testbed profiles POST their modelled telemetry to it; the ``sdk``
pages send it what the vendor's code produced or tried to send.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from reallymuted.testbed.drivers import Driver, DriverError

COLLECTOR_LOG = "collector.jsonl"
DEFAULT_COLLECTOR_PORT = 8090


class CollectorClient(Driver):
    """Mixed into a page driver (before it in the bases): starts the collector before the
    browser, stops it after."""

    def start(self) -> None:
        self.start_collector()
        super().start()

    def stop(self) -> None:
        super().stop()
        self.stop_collector()

    @property
    def collector_port(self) -> int:
        return int(self.ctx.options.get("collector_port", DEFAULT_COLLECTOR_PORT))

    @property
    def collector_base(self) -> str:
        return f"http://127.0.0.1:{self.collector_port}"

    @property
    def collector_url(self) -> str:
        return self.collector_base

    def endpoints(self) -> dict[str, Any]:
        return {**super().endpoints(), "collector": self.collector_url}

    def client_traffic(self) -> dict[str, Any]:
        # the page POSTs to the collector from ephemeral ports: name the server's port instead
        return {**super().client_traffic(), "server_ports": [self.collector_port]}

    def start_collector(self) -> None:
        """The collector listens before the browser starts, so no record can find it absent."""
        self.collector_log = self.ctx.workdir / COLLECTOR_LOG
        argv = [
            sys.executable,
            "-m",
            "reallymuted.testbed.collector",
            "--port",
            str(self.collector_port),
        ]
        argv += ["--out", str(self.collector_log), "--t0", repr(self.ctx.t0)]
        self.collector = self.ctx.procs.start("collector", argv, output=self.log_file("collector"))
        deadline = time.monotonic() + 10
        while True:
            if self.collector_log.exists() and '"listening"' in self.collector_log.read_text():
                break
            if self.collector.returncode() is not None:
                raise DriverError(f"collector exited with status {self.collector.returncode()}")
            if time.monotonic() > deadline:
                raise DriverError("collector not listening within 10 s")
            time.sleep(0.02)
        first = json.loads(self.collector_log.read_text().splitlines()[0])
        self.ctx.event(
            "collector_ready", pid=self.collector.pid, url=self.collector_url, t_log=first["t"]
        )

    def stop_collector(self) -> None:
        collector = getattr(self, "collector", None)
        if collector is not None:
            rc = self.ctx.procs.stop(collector, timeout=5.0)
            if rc != 0:
                raise DriverError(f"collector exited with status {rc} on stop")

    def evidence(self) -> dict[str, Path]:
        return {COLLECTOR_LOG: self.collector_log}
