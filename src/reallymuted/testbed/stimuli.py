"""Stimuli played into the session's microphone: seeded, reproducible 48 kHz mono WAV files.

A session loops its stimulus for as long as it runs. Four kinds:

* ``speech``: English sentences (public-domain Harvard sentences) spoken by espeak-ng, in an
  order and with pauses drawn from ``seed``, resampled to the microphone rate and normalised
  to ``level`` (peak, fraction of full scale);
* ``tone``: a continuous sine at ``freq_hz`` with peak ``level`` — a level that never dips,
  handy when a check must see signal in every 20 ms tick;
* ``steps``: the same sine held at each peak level of ``levels_db`` (dB re full scale) for
  ``step_s`` seconds in turn, so the input level changes on a known schedule; with ``step_s``
  equal to a profile's telemetry interval, successive records see different levels, which is
  what shows that the posted gains follow the input (``reallymuted.analysis.telemetry.sessions``).
* ``activity``: one recording of a background activity of the paper's attack (PAPER.md C1:
  classical music, cooking/eating, people talking, dog barking, keyboard typing,
  vacuum/cleaning) as heard at ``distance_cm`` from the microphone
  (:mod:`reallymuted.testbed.activities`). The study's ``attack`` config section generates
  one such stimulus per activity x recording x distance
  (:func:`reallymuted.study.attack_stimuli`); they can also be written by hand.

A stimulus spec may also name the ``apps`` that play it (read by
`reallymuted.study.matrix`, ignored here).

The same spec gives the same bytes on the same espeak-ng version (recorded in the manifest
through the file's sha256), in any process and whatever the caller's sound setup (espeak-ng
runs without it: :func:`reallymuted.testbed.sound.espeak_env`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from reallymuted.io import atomic_path, sha256_file
from reallymuted.testbed.activities import activity_stimulus
from reallymuted.testbed.sound import RATE, SENTENCES, resample, speak


def speech(
    seconds: float, seed: int, level: float, voice: str = "en", wpm: int = 160
) -> np.ndarray:
    """Sentences in a seeded order with seeded pauses, looped until ``seconds``."""
    rng = np.random.default_rng(seed)
    clips: dict[int, np.ndarray] = {}  # one espeak-ng call per sentence used
    parts: list[np.ndarray] = []
    total = 0
    target = round(seconds * RATE)
    while total < target:
        for index in rng.permutation(len(SENTENCES)):
            if index not in clips:
                x, rate = speak(SENTENCES[index], voice, wpm)
                clips[index] = resample(x, rate)
            pause = np.zeros(int(rng.uniform(0.3, 1.2) * RATE))
            parts += [clips[index], pause]
            total += len(clips[index]) + len(pause)
            if total >= target:
                break
    y = np.concatenate(parts)[:target]
    peak = float(np.max(np.abs(y))) or 1.0
    return y * (level / peak)


def tone(seconds: float, freq_hz: float, level: float) -> np.ndarray:
    n = round(seconds * RATE)
    return level * np.sin(2 * np.pi * freq_hz * np.arange(n) / RATE)


def steps(levels_db: list[float], step_s: float, freq_hz: float) -> np.ndarray:
    """A sine held at each peak level (dB re full scale) for ``step_s`` seconds in turn.

    Each step is a whole number of periods long where possible, and the phase runs on across
    steps, so a level change adds no click of its own.
    """
    if not levels_db:
        raise ValueError("steps: levels_db is empty")
    if any(level > 0 for level in levels_db):
        raise ValueError(f"steps: levels_db {levels_db} must be <= 0 dB (full scale)")
    n = round(step_s * RATE)
    envelope = np.repeat([10 ** (level / 20) for level in levels_db], n)
    return envelope * np.sin(2 * np.pi * freq_hz * np.arange(len(envelope)) / RATE)


def make_stimulus(spec: Mapping[str, Any], out: str | Path) -> str:
    """Write the stimulus described by ``spec`` to ``out`` (16-bit PCM); return its sha256."""
    kind = spec["kind"]
    seconds = float(spec.get("seconds", 20))
    level = float(spec.get("level", 0.5))
    if kind == "speech":
        y = speech(seconds, int(spec.get("seed", 1)), level, spec.get("voice", "en"))
    elif kind == "tone":
        y = tone(seconds, float(spec.get("freq_hz", 440.0)), level)
    elif kind == "steps":
        y = steps(
            [float(v) for v in spec["levels_db"]],
            float(spec.get("step_s", 4.0)),
            float(spec.get("freq_hz", 440.0)),
        )
    elif kind == "activity":
        y = activity_stimulus(spec)
    else:
        raise ValueError(
            f"stimulus kind {kind!r}: expected 'speech', 'tone', 'steps' or 'activity'"
        )
    with atomic_path(out) as tmp:
        sf.write(str(tmp), y.astype(np.float64), RATE, subtype="PCM_16", format="WAV")
    return sha256_file(out)
