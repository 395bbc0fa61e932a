"""The gain model of the testbed profiles' telemetry, and the statistics that compare it.

The gain model is ours, not Webex's code (the page computes it in ``web/gain-worklet.js``): per
10 ms frame, ``gain = clamp(round(100 + 20 log10(rms)), 0, 100)`` with ``rms`` the frame's RMS
as a fraction of full scale (a silent frame: 0); a record carries the max, mean (rounded) and
min of its interval's frame gains. A full-scale sine gives 97, one dB of input is one gain
step: monotone in the input level, and on the scale of the gains in the authors' record
(PAPER.md T1: roughly 14-97).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


def frame_gain(rms: float | np.ndarray) -> np.ndarray:
    """Gain 0-100 of frames with these RMS values (fractions of full scale); see the module."""
    rms = np.asarray(rms, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        level = 20 * np.log10(rms)
    gain = np.clip(np.floor(100 + level + 0.5), 0, 100)  # halves up, as JavaScript's Math.round
    return np.where(rms > 0, gain, 0).astype(int)


def frame_gaps(samples: np.ndarray, rate: int) -> np.ndarray:
    """Per whole 10 ms frame of ``samples``: does it hold a gap, a run of exactly-zero samples
    at least 1 ms long at one of its samples (the page's test, ``web/gain-worklet.js``)."""
    x = np.asarray(samples)
    index = np.arange(len(x))
    last_nonzero = np.maximum.accumulate(np.where(x != 0, index, -1))
    reached = index - last_nonzero >= rate // 1000
    frame = rate // 100
    return reached[: len(x) // frame * frame].reshape(-1, frame).any(axis=1)


def page_gap_frames(events: Iterable[Mapping[str, Any]]) -> dict[int, int]:
    """Interval number -> frames holding a gap, as the page noted them beside each record
    (absent for sessions recorded before the page counted them)."""
    return {
        int(e["interval"]): int(e["gap_frames"])
        for e in events
        if e.get("event") == "page_telemetry_sent" and e.get("gap_frames") is not None
    }


def level_dbfs(rms: float | np.ndarray, floor: float = -100.0) -> np.ndarray:
    """RMS as dB re full scale, silence at ``floor``."""
    rms = np.asarray(rms, dtype=float)
    with np.errstate(divide="ignore"):
        return np.maximum(20 * np.log10(rms), floor)


def pearson(x: Iterable[float], y: Iterable[float]) -> float:
    """Pearson's r; NaN with fewer than three pairs or no spread on either side."""
    a, b = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
