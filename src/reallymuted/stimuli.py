"""Stimuli played into the session's microphone: seeded, reproducible 48 kHz mono WAV files.

A session loops its stimulus for as long as it runs. Two kinds for now:

* ``speech``: English sentences (public-domain Harvard sentences) spoken by espeak-ng, in an
  order and with pauses drawn from ``seed``, resampled to the microphone rate and normalised
  to ``level`` (peak, fraction of full scale);
* ``tone``: a continuous sine at ``freq_hz`` with peak ``level`` — a level that never dips,
  handy when a check must see signal in every 20 ms tick.

The same spec gives the same bytes on the same espeak-ng version (recorded in the manifest
through the file's sha256).
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from collections.abc import Mapping
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from reallymuted.io import atomic_path

RATE = 48000

SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
)


def _speak(text: str, voice: str, words_per_minute: int) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(wav), text],
            check=True,
            capture_output=True,
        )
        data, rate = sf.read(str(wav), dtype="float64", always_2d=True)
    return data[:, 0], rate


def _resample(x: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE:
        return x
    from scipy.signal import resample_poly  # slow to import; only stimulus building needs it

    g = gcd(RATE, rate)
    return resample_poly(x, RATE // g, rate // g)


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
                x, rate = _speak(SENTENCES[index], voice, wpm)
                clips[index] = _resample(x, rate)
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


def make_stimulus(spec: Mapping[str, Any], out: str | Path) -> str:
    """Write the stimulus described by ``spec`` to ``out`` (16-bit PCM); return its sha256."""
    kind = spec["kind"]
    seconds = float(spec.get("seconds", 20))
    level = float(spec.get("level", 0.5))
    if kind == "speech":
        y = speech(seconds, int(spec.get("seed", 1)), level, spec.get("voice", "en"))
    elif kind == "tone":
        y = tone(seconds, float(spec.get("freq_hz", 440.0)), level)
    else:
        raise ValueError(f"stimulus kind {kind!r}: expected 'speech' or 'tone'")
    with atomic_path(out) as tmp:
        sf.write(str(tmp), y.astype(np.float64), RATE, subtype="PCM_16", format="WAV")
    return sha256(out)


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
