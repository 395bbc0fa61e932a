"""What the microphone was fed during each telemetry interval of an attack session
(:mod:`reallymuted.analysis.attack`): the samples, their level, and the gains the profile's
gain model gives them.

THE INPUT LEVEL: ``input_dbfs`` is the RMS of the interval's fed samples in dB re full scale
(RMS 1.0: a full-scale sine is -3 dB, as in the gain model); ``input_dba`` the same after
A-weighting (IEC 61672-1 analog response, applied exactly in the frequency domain over the
interval's samples, :func:`a_weighting_db`). It is a digital level (dB(A) re full scale), not a
sound pressure level: the paper measured dBA in the room. The page's interval boundaries and
the writer's ticks are on one session clock but the audio reaches the page some tens of ms
after its tick is written; at 2 s intervals that misplaces at most a few percent of the samples.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from reallymuted.analysis.telemetry.gainmodel import frame_gain, frame_gaps
from reallymuted.io import DataError


def a_weighting_db(freq_hz: float | np.ndarray) -> np.ndarray:
    """A-weighting in dB at these frequencies (IEC 61672-1: 0 dB at 1 kHz, -inf at 0 Hz)."""
    f2 = np.square(np.asarray(freq_hz, dtype=float))
    with np.errstate(divide="ignore"):
        ra = (12194.0**2 * f2**2) / (
            (f2 + 20.6**2) * np.sqrt((f2 + 107.7**2) * (f2 + 737.9**2)) * (f2 + 12194.0**2)
        )
        return 20 * np.log10(ra) + 2.0


def level_db(samples: np.ndarray, rate: int, weighted: bool = False) -> float:
    """Power level of ``samples`` (fractions of full scale) in dB re RMS 1.0, optionally
    A-weighted (exactly, per FFT bin, by Parseval); NaN for no samples, -inf for silence."""
    x = np.asarray(samples, dtype=float)
    if len(x) == 0:
        return float("nan")
    if not weighted:
        power = float(np.mean(np.square(x)))
    else:
        spectrum = np.abs(np.fft.rfft(x)) ** 2
        bins = np.full(len(spectrum), 2.0)  # one-sided: every bin but DC and Nyquist twice
        bins[0] = 1.0
        if len(x) % 2 == 0:
            bins[-1] = 1.0
        gain = 10 ** (a_weighting_db(np.fft.rfftfreq(len(x), 1 / rate)) / 10)
        power = float(np.sum(bins * gain * spectrum) / len(x) ** 2)
    with np.errstate(divide="ignore"):
        return float(10 * np.log10(power))


def fed_samples(ticks: pd.DataFrame, stimulus: np.ndarray, per_tick: int) -> np.ndarray:
    """The samples these writer ticks put into the microphone (the ``frames`` it accepted).

    The writer (:func:`reallymuted.testbed.audio.feed`) cuts the stimulus into whole ticks and plays
    tick ``i`` as chunk ``i mod chunks``, whether or not PulseAudio takes it; a tick's
    ``frames`` are the frames PulseAudio took (all or none: a pipe write this small is atomic).
    """
    chunks = len(stimulus) // per_tick
    if chunks == 0:
        raise DataError("the stimulus is shorter than one tick")
    parts = [
        stimulus[(tick % chunks) * per_tick : (tick % chunks) * per_tick + frames]
        for tick, frames in zip(ticks.tick.astype(int), ticks.frames.astype(int), strict=True)
        if frames > 0
    ]
    return np.concatenate(parts) if parts else np.empty(0)


def input_levels(
    os_ticks: pd.DataFrame, stimulus: np.ndarray, per_tick: int, rate: int, start: float, end: float
) -> dict[str, float]:
    """Input level over [start, end) of the session clock: ticks accepted, seconds fed,
    unweighted and A-weighted level of the fed samples (see the module docstring), and the
    max/mean/min gain the profile's gain model gives those samples in 10 ms frames
    (:func:`reallymuted.analysis.telemetry.gainmodel.frame_gain`): what the record should say;
    and how many of those frames hold a gap
    (:func:`~reallymuted.analysis.telemetry.gainmodel.frame_gaps`)."""
    ticks = os_ticks[(os_ticks.t >= start) & (os_ticks.t < end)]
    samples = fed_samples(ticks, stimulus, per_tick) if len(ticks) else np.empty(0)
    frame = rate // 100
    frames = samples[: len(samples) // frame * frame].reshape(-1, frame)
    gains = frame_gain(np.sqrt(np.mean(np.square(frames), axis=1))) if len(frames) else []
    gaps = frame_gaps(samples, rate)
    return {
        "input_ticks": int((ticks.frames > 0).sum()),
        "input_seconds": len(samples) / rate,
        "input_dbfs": level_db(samples, rate),
        "input_dba": level_db(samples, rate, weighted=True),
        "model_max_gain": float(np.max(gains)) if len(gains) else float("nan"),
        "model_mean_gain": float(np.floor(np.mean(gains) + 0.5)) if len(gains) else float("nan"),
        "model_min_gain": float(np.min(gains)) if len(gains) else float("nan"),
        "model_gap_frames": int(gaps.sum()),
    }
