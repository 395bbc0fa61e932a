"""A quick look at one session's evidence: per phase, what each witness saw and the RTP rate.

The instrument's own check, used by the tests and by hand (``python -m
reallymuted.testbed.supervisor summary DIR``); the study's analysis is
:mod:`reallymuted.analysis`.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from reallymuted.io import read_jsonl
from reallymuted.paths import MANIFEST
from reallymuted.testbed import audio, capture


def phases(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The mute timeline from events.jsonl: before join, each (un)muted phase, after leave."""
    marks = [e for e in events if e["event"] in ("join", "mute", "unmute", "leave")]
    end = max((e["t"] for e in events if e["event"] == "session_end"), default=marks[-1]["t"])
    out = [{"state": "before_join", "start": 0.0, "end": marks[0]["t"]}]
    state = "unmuted"
    for mark, following in itertools.pairwise(marks):
        state = {"mute": "muted", "unmute": "unmuted"}.get(mark["event"], state)
        out.append({"state": state, "start": mark["t"], "end": following["t"]})
    out.append({"state": "after_leave", "start": marks[-1]["t"], "end": end})
    return out


def summarise(outdir: str | Path, margin_s: float = 0.5) -> dict[str, Any]:
    """Per phase: how much each witness saw and the client's RTP rate.

    Each phase is judged on [start + margin_s, end), so the moments right after a change
    (a stream closing, a getUserMedia) are not counted against the new state. The
    instrument's own check, used by the tests and by hand; the extract and micpolicy stages
    do the study's analysis.
    """
    outdir = Path(outdir)
    manifest = json.loads((outdir / MANIFEST).read_text())
    events = read_jsonl(outdir / "events.jsonl")
    reads = read_jsonl(outdir / "mic_trace.jsonl")
    bytes_per_s = manifest["microphone"]["rate"] * 2 * manifest["microphone"]["channels"]
    ports = set((manifest.get("client") or {}).get("ports", []))
    epoch0 = manifest["start"]["epoch"]
    rtp = [
        p["time"] - epoch0
        for p in capture.rtp_packets(outdir / "traffic.pcapng")
        if p["sport"] in ports
    ]
    rows = []
    for phase in phases(events):
        lo, hi = phase["start"] + margin_s, phase["end"]
        if hi - lo <= 0:
            continue
        os_rows = [r for r in reads if r["api"] == audio.OS_API and lo <= r["t"] < hi]
        app_rows = [r for r in reads if r["api"] != audio.OS_API and lo <= r["t"] < hi]
        rows.append(
            {
                **phase,
                "window_s": round(hi - lo, 3),
                "os_read_fraction": round(
                    sum(r["bytes"] for r in os_rows) / bytes_per_s / (hi - lo), 3
                ),
                "os_ticks_read": sum(1 for r in os_rows if r["bytes"]),
                "app_reads": len(app_rows),
                "app_reads_per_s": round(len(app_rows) / (hi - lo), 2),
                "app_peak_max": max((r["peak"] or 0.0 for r in app_rows), default=None),
                "rtp_pkts_per_s": round(sum(1 for t in rtp if lo <= t < hi) / (hi - lo), 2),
            }
        )
    return {"app": manifest["app"], "condition": manifest["condition"], "phases": rows}
