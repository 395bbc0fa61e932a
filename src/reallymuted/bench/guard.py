"""Benchmark of ``reallymuted guard``: how soon an unmuted app hears again (issue 15: under
50 ms from the unmute request to the first non-silent sample at the app), on PulseAudio and on
PipeWire, each on a headless desktop of its own."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from reallymuted.bench.common import log
from reallymuted.guard.latency import unmute_latency
from reallymuted.io import write_json
from reallymuted.testbed.headless import headless_desktop
from reallymuted.testbed.stimuli import make_stimulus

TARGET_MS = 50.0
SERVERS = ("pulseaudio", "pipewire")


def bench_guard_latency(out_dir: Path, repeats: int = 20) -> dict[str, Any]:
    per_server = {}
    root = Path(tempfile.mkdtemp(prefix="reallymuted-bench-guard-"))
    root.chmod(0o755)  # the desktop's user must reach it
    try:
        tone = root / "tone.wav"
        make_stimulus({"kind": "tone", "seconds": 2, "freq_hz": 440, "level": 0.5}, tone)
        for kind in SERVERS:
            log.info("guard_latency: %s, %d mute/unmute cycles …", kind, repeats)
            with headless_desktop(kind, root, tone) as desktop:
                per_server[kind] = unmute_latency(desktop, repeats)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    worst = max(r["unmute_to_sound_ms"]["p95"] or float("inf") for r in per_server.values())
    silent = all(r["nonzero_samples_while_muted"] == 0 for r in per_server.values())
    always_back = all(r["sound_never_came_back"] == 0 for r in per_server.values())
    result = {
        "benchmark": "guard_latency",
        "what": "parecord guarded by `reallymuted guard` on a headless desktop, muted and "
        f"unmuted {repeats} times through the guard's socket: ms from the unmute request to "
        "the first non-silent chunk the app receives (p95, the worst server's); every "
        "sample it received while muted must be zero",
        "baseline": None,  # nothing to compare with: no OS-level mute existed before
        "measured": round(worst, 1),
        "ratio": None,
        "servers": per_server,
        "target": f"unmute to sound under {TARGET_MS:.0f} ms (p95) on "
        f"{' and '.join(SERVERS)}, and digital silence while muted",
        "met": worst < TARGET_MS and silent and always_back,
    }
    write_json(out_dir / "guard_latency.json", result)
    return result
