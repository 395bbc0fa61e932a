"""Activity stimuli: one recording of a background activity of the paper's attack (PAPER.md C1),
as heard at a distance from the microphone (``kind: activity`` of
:mod:`reallymuted.testbed.stimuli`).

A recording is either the project's **synthetic** generator (procedural sound, seeded by
``seed``, the activity and the recording number; built to have each activity's temporal
character, and nothing more: it is not the paper's ASMR videos, and a classifier's accuracy on
it is not the paper's figure) or a file of a directory of **real recordings** (any format and
length soundfile reads; the n-th file in name order is recording n). Either way the clean
recording is mixed to mono at 48 kHz and set to ``level_dbfs`` RMS (dB re full scale) — or
lower, if its peaks would pass -1 dBFS — as heard at the reference distance.

THE DISTANCE MODEL (ours): a source at ``distance_cm`` is attenuated by
``20 * distance_exponent * log10(distance_cm / reference_distance_cm)`` dB (exponent 1: the
free-field inverse-distance law, 6 dB per doubling, re 10 cm by default), then room noise is
added at ``room_noise_dbfs`` RMS (pink noise, seeded per stimulus, independent of distance): so
the farther the source, the nearer its quiet moments sink to the room's floor. No reverberation,
no spectral change with distance.

Synthetic recordings, each from numpy (and espeak-ng for speech):

* ``cm`` classical music: a chord progression in a random major key and tempo, a melody, a bass
  line and a sustained pad of additive-synthesis notes with vibrato, phrase-length swells, and
  a short synthetic reverberation: continuous, tonal, slowly varying loudness;
* ``ck`` cooking/eating: high-pass sizzle with crackle, utensil clatter (damped inharmonic
  partials) and runs of chopping thuds: a steady broadband bed under sharp transients;
* ``tk`` people talking: two or three espeak-ng voices (voice, pitch, rate drawn per
  recording) speaking the sentences above with pauses, overlapping: speech-rate modulation,
  rarely silent;
* ``dg`` dog barking: bouts of one to five barks (a falling harmonic call with breath noise,
  120-280 ms) separated by seconds of quiet: bursts over the room's floor;
* ``kb`` keyboard typing: key clicks (a filtered noise transient plus a short "thock"), press
  and release, at typing rhythm in words, with pauses between sentences: dense sharp clicks,
  a high crest factor;
* ``vc`` vacuum/cleaning: a motor hum (a drifting fundamental of 110-190 Hz with harmonics)
  over broadband airflow noise, with slow back-and-forth strokes: steady, with a hum peak.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from reallymuted.testbed.sound import RATE, SENTENCES, resample, speak

SOURCES = ("synthetic", "recordings")
PEAK_DBFS = -1.0  # a recording is turned down rather than let its peaks pass this
# espeak-ng voices of the talking activity (each recording draws two or three, with pitch/rate)
VOICES = ("en+m3", "en+f3", "en-us+m1", "en+f2", "en-gb+m5", "en-us+f4", "en+m7")


def _rng(*parts: int | str) -> np.random.Generator:
    """A generator seeded by ints and strings (strings by CRC-32: stable across runs)."""
    words = [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]
    return np.random.default_rng(np.random.SeedSequence(words))


def _sos_filter(x: np.ndarray, low_hz: float | None, high_hz: float | None) -> np.ndarray:
    """Butterworth band-, high- or low-pass (4th order), applied forward."""
    from scipy.signal import butter, sosfilt

    if low_hz and high_hz:
        sos = butter(4, [low_hz, high_hz], btype="bandpass", fs=RATE, output="sos")
    elif low_hz:
        sos = butter(4, low_hz, btype="highpass", fs=RATE, output="sos")
    else:
        sos = butter(4, high_hz, btype="lowpass", fs=RATE, output="sos")
    return sosfilt(sos, x)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0


def _slow(n: int, rng: np.random.Generator, hz: float) -> np.ndarray:
    """A smooth random curve of about unit spread, changing about ``hz`` times a second."""
    knots = rng.standard_normal(int(n / RATE * hz) + 2)
    return np.interp(np.arange(n) / RATE * hz, np.arange(len(knots)), knots)


def _add(y: np.ndarray, sound: np.ndarray, at_s: float, gain: float = 1.0) -> None:
    """Mix ``sound`` into ``y`` from ``at_s`` seconds on (cut at the end of ``y``)."""
    start = round(at_s * RATE)
    if start >= len(y):
        return
    part = sound[: len(y) - start]
    y[start : start + len(part)] += gain * part


def _decay(n: int, tau_s: float) -> np.ndarray:
    return np.exp(-np.arange(n) / RATE / tau_s)


# -- the six synthetic activities (each: n samples from a seeded generator) ---------------


def _note(midi: float, seconds: float, harmonics: int, rng: np.random.Generator) -> np.ndarray:
    """One additive-synthesis note: attack, decay to sustain, release; with vibrato."""
    release = 0.3
    n = round((seconds + release) * RATE)
    t = np.arange(n) / RATE
    freq = 440.0 * 2 ** ((midi - 69) / 12)
    vibrato = 1 + 0.003 * np.sin(2 * np.pi * rng.uniform(4.5, 6) * t + rng.uniform(0, 6.3))
    phase = 2 * np.pi * freq * np.cumsum(vibrato) / RATE
    tone = sum(np.sin(k * phase) / k**1.5 for k in range(1, harmonics + 1))
    attack = np.minimum(t / 0.04, 1.0)
    body = 0.6 + 0.4 * np.exp(-t / 0.3)
    tail = np.clip((seconds + release - t) / release, 0.0, 1.0)
    return tone * attack * body * tail


def _music(n: int, rng: np.random.Generator) -> np.ndarray:
    """Classical-style music: I-IV-V-I-vi-ii-V-I in a random key, melody, bass and pad."""
    from scipy.signal import fftconvolve

    scale = [0, 2, 4, 5, 7, 9, 11]
    tonic = int(rng.choice([48, 50, 53, 55, 57]))
    beat = 60.0 / rng.uniform(60, 92)

    def pitch(degree: int, octave: int) -> int:
        return tonic + 12 * (octave + degree // 7) + scale[degree % 7]

    y = np.zeros(n)
    progression = [0, 3, 4, 0, 5, 1, 4, 0]
    t, bar = 0.0, 0
    while t < n / RATE:
        root = progression[bar % len(progression)]
        chord = [root, root + 2, root + 4]
        for degree in chord:  # the pad: the chord held for the bar
            _add(y, _note(pitch(degree, 1), 4 * beat, 4, rng), t, 0.12)
        for half in (0, 2):  # the bass: the root every half bar
            _add(y, _note(pitch(root, 0), 2 * beat, 6, rng), t + half * beat, 0.3)
        for b in range(4):  # the melody: a chord tone or a neighbour per beat, some rests
            if rng.random() < 0.1:
                continue
            degree = int(rng.choice(chord)) + int(rng.choice([0, 0, 1, -1]))
            length = beat * float(rng.choice([1.0, 1.0, 0.5]))
            _add(y, _note(pitch(degree, 2), length, 6, rng), t + b * beat, 0.35)
            if length < beat:
                _add(y, _note(pitch(degree + 1, 2), length, 6, rng), t + (b + 0.5) * beat, 0.3)
        t += 4 * beat
        bar += 1
    swell = 10 ** (5 * np.sin(2 * np.pi * np.arange(n) / RATE / rng.uniform(8, 16)) / 20)
    y *= swell
    room = rng.standard_normal(round(1.2 * RATE)) * _decay(round(1.2 * RATE), 0.3)
    wet = fftconvolve(y, room)[:n]
    return y + 0.25 * wet * (_rms(y) / (_rms(wet) or 1.0))


def _cooking(n: int, rng: np.random.Generator) -> np.ndarray:
    """Sizzle and crackle, utensil clatter, and runs of chopping."""
    from scipy.signal import fftconvolve

    sizzle = _sos_filter(rng.standard_normal(n), 2500, None)
    sizzle *= 10 ** (2 * _slow(n, rng, 0.5) / 20) / (_rms(sizzle) or 1.0)
    pops = np.zeros(n)
    count = rng.poisson(rng.uniform(20, 50) * n / RATE)
    np.add.at(pops, rng.integers(0, n, count), rng.lognormal(0.0, 0.5, count))
    pop = _sos_filter(rng.standard_normal(96), 1500, None) * _decay(96, 0.0006)
    y = 0.3 * sizzle + 0.5 * fftconvolve(pops, pop)[:n]
    t = rng.exponential(1.5)
    while t < n / RATE:  # clatter: clusters of one to three hits
        for _ in range(int(rng.integers(1, 4))):
            length = round(0.4 * RATE)
            hit = sum(
                np.sin(2 * np.pi * rng.uniform(1500, 7000) * np.arange(length) / RATE)
                * _decay(length, rng.uniform(0.03, 0.15))
                for _ in range(int(rng.integers(3, 7)))
            )
            _add(y, hit / np.max(np.abs(hit)), t, 10 ** (rng.uniform(10, 18) / 20) * 0.3)
            t += rng.uniform(0.08, 0.3)
        t += rng.exponential(2.0)
    t = rng.uniform(2, 12)
    while t < n / RATE:  # chopping: a run of thuds at 3-4 Hz every 10-20 s
        end = t + rng.uniform(2, 5)
        rate = rng.uniform(3, 4)
        while t < min(end, n / RATE):
            length = round(0.12 * RATE)
            k = np.arange(length) / RATE
            thud = np.sin(2 * np.pi * rng.uniform(100, 250) * k) * _decay(length, 0.02)
            thud += 0.4 * rng.standard_normal(length) * _decay(length, 0.003)
            _add(y, thud, t, 10 ** (rng.normal(0, 2) / 20) * 1.2)
            t += 1 / rate
        t += rng.uniform(10, 20)
    return y


def _talking(n: int, rng: np.random.Generator) -> np.ndarray:
    """Two or three espeak-ng voices, each speaking sentences with pauses, overlapping."""
    y = np.zeros(n)
    speakers = int(rng.integers(2, 4))
    voices = rng.choice(len(VOICES), size=speakers, replace=False)
    for index, voice in enumerate(voices):
        pitch, wpm = int(rng.integers(25, 75)), int(rng.integers(140, 185))
        clips: dict[int, np.ndarray] = {}
        t = rng.uniform(0.0, 1.5)
        gain = 10 ** (-3 * index / 20)
        while t < n / RATE:
            sentence = int(rng.integers(len(SENTENCES)))
            if sentence not in clips:
                x, rate = speak(SENTENCES[sentence], VOICES[voice], wpm, pitch)
                x = resample(x, rate)
                clips[sentence] = x / (_rms(x) or 1.0)
            _add(y, clips[sentence], t, gain)
            t += len(clips[sentence]) / RATE + rng.uniform(0.3, 2.0)
    return y


def _bark(rng: np.random.Generator, base_hz: float) -> np.ndarray:
    """One bark: a falling harmonic call with breath noise, 120-280 ms."""
    seconds = rng.uniform(0.12, 0.28)
    n = round(seconds * RATE)
    t = np.arange(n) / RATE
    f0 = base_hz * rng.uniform(0.9, 1.1) * (1.15 - 0.35 * t / seconds)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    call = sum(np.sin(k * phase) / k**0.8 for k in range(1, 11))
    call = call / (_rms(call) or 1.0) + 0.5 * rng.standard_normal(n)
    call = _sos_filter(call, 500, 3500)
    envelope = np.minimum(t / 0.008, 1.0) * np.exp(-t / (seconds / 2.5))
    return call * envelope


def _dog(n: int, rng: np.random.Generator) -> np.ndarray:
    """Bouts of one to five barks, seconds of quiet between bouts."""
    y = np.zeros(n)
    base = rng.uniform(450, 800)  # this dog's voice
    t = rng.uniform(0.2, 2.0)
    while t < n / RATE:
        for _ in range(int(rng.integers(1, 6))):
            bark = _bark(rng, base)
            _add(y, bark, t, 10 ** (rng.normal(0, 2) / 20))
            t += len(bark) / RATE + rng.uniform(0.12, 0.35)
        t += 1.0 + rng.exponential(3.0)
    return y


def _key_sound(rng: np.random.Generator, low: bool = False) -> np.ndarray:
    """One key's click: a filtered noise transient and a short resonant "thock"."""
    n = round(0.03 * RATE)
    t = np.arange(n) / RATE
    click = _sos_filter(rng.standard_normal(n), 1500, 9000) * _decay(n, rng.uniform(0.001, 0.003))
    freq = rng.uniform(90, 160) if low else rng.uniform(180, 400)
    thock = np.sin(2 * np.pi * freq * t) * _decay(n, rng.uniform(0.004, 0.01))
    sound = click / (np.max(np.abs(click)) or 1.0) + (1.2 if low else 0.6) * thock
    return sound / np.max(np.abs(sound))


def _keyboard(n: int, rng: np.random.Generator) -> np.ndarray:
    """Typing: words of key presses and releases, spaces, pauses between sentences."""
    y = np.zeros(n)
    keys = [_key_sound(rng) for _ in range(8)]
    space = _key_sound(rng, low=True)
    t = rng.uniform(0.1, 1.0)
    while t < n / RATE:
        for _ in range(int(rng.integers(2, 9))):
            key = keys[int(rng.integers(len(keys)))]
            gain = 10 ** (rng.normal(0, 2.5) / 20)
            _add(y, key, t, gain)
            _add(y, key, t + rng.uniform(0.05, 0.1), 0.3 * gain)  # the release
            t += rng.lognormal(np.log(0.13), 0.35)
        _add(y, space, t, 1.1)
        t += rng.uniform(0.15, 0.35)
        pause = rng.random()
        if pause < 0.12:  # end of a sentence
            t += rng.uniform(1.0, 3.0)
        elif pause < 0.15:  # thinking
            t += rng.uniform(3.0, 6.0)
    return y


def _vacuum(n: int, rng: np.random.Generator) -> np.ndarray:
    """A vacuum cleaner: motor hum with harmonics over airflow noise, slow strokes."""
    t = np.arange(n) / RATE
    f0 = rng.uniform(110, 190)
    phase = 2 * np.pi * f0 * np.cumsum(1 + 0.004 * _slow(n, rng, 0.2)) / RATE
    hum = sum(np.sin(k * phase + rng.uniform(0, 6.3)) / k**1.2 for k in range(1, 13))
    air = _sos_filter(rng.standard_normal(n), 80, 7000)
    air += 0.3 * _sos_filter(rng.standard_normal(n), 3000, None)
    mix = 0.7 * hum / _rms(hum) + air / _rms(air)
    stroke_hz, stroke_phase = rng.uniform(0.25, 0.5), rng.uniform(0, 6.3)
    return mix * 10 ** (1.5 * np.sin(2 * np.pi * stroke_hz * t + stroke_phase) / 20)


SYNTHETIC = {
    "cm": _music,
    "ck": _cooking,
    "tk": _talking,
    "dg": _dog,
    "kb": _keyboard,
    "vc": _vacuum,
}


# -- recordings, level, distance -----------------------------------------------------------


def synthetic_recording(activity: str, recording: int, seconds: float, seed: int) -> np.ndarray:
    """The clean synthetic recording (before level and distance); same arguments, same samples."""
    if activity not in SYNTHETIC:
        raise ValueError(
            f"no synthetic generator for activity {activity!r}; known: {', '.join(SYNTHETIC)}"
        )
    n = round(seconds * RATE)
    return SYNTHETIC[activity](n, _rng(seed, "activity", activity, recording))


def load_recording(path: str | Path, seconds: float | None = None) -> np.ndarray:
    """A real recording as mono 48 kHz samples, cut to its first ``seconds`` if longer."""
    data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    x = resample(data.mean(axis=1), rate)
    if seconds is not None:
        x = x[: round(seconds * RATE)]
    if len(x) < RATE // 2 or _rms(x) == 0:
        raise ValueError(f"{path}: shorter than 0.5 s or silent")
    return x


def set_level(x: np.ndarray, level_dbfs: float, peak_dbfs: float = PEAK_DBFS) -> np.ndarray:
    """``x`` at ``level_dbfs`` RMS, or lower if its peak would pass ``peak_dbfs``."""
    rms = _rms(x)
    if rms == 0:
        raise ValueError("a silent recording has no level to set")
    y = x * (10 ** (level_dbfs / 20) / rms)
    peak, limit = float(np.max(np.abs(y))), 10 ** (peak_dbfs / 20)
    return y * (limit / peak) if peak > limit else y


def attenuation_db(distance_cm: float, reference_cm: float = 10.0, exponent: float = 1.0) -> float:
    """Level change (dB, negative = quieter) of a source moved from ``reference_cm`` to
    ``distance_cm``: ``-20 * exponent * log10(distance / reference)``."""
    if distance_cm <= 0 or reference_cm <= 0:
        raise ValueError("distances must be > 0")
    return -20.0 * exponent * float(np.log10(distance_cm / reference_cm))


def room_noise(n: int, level_dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """Pink noise (-3 dB per octave; Kellet's filter) at ``level_dbfs`` RMS."""
    from scipy.signal import lfilter

    b = [0.049922035, -0.095993537, 0.050612699, -0.004408786]
    a = [1.0, -2.494956002, 2.017265875, -0.522189400]
    noise = lfilter(b, a, rng.standard_normal(n + RATE))[RATE:]  # past the filter's start-up
    return noise * (10 ** (level_dbfs / 20) / _rms(noise))


def at_distance(
    clean: np.ndarray,
    distance_cm: float,
    reference_cm: float,
    exponent: float,
    room_noise_dbfs: float | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """The distance model (module docstring): attenuate, then add the room's noise."""
    y = clean * 10 ** (attenuation_db(distance_cm, reference_cm, exponent) / 20)
    if room_noise_dbfs is not None:
        y = y + room_noise(len(y), room_noise_dbfs, rng)
    peak = float(np.max(np.abs(y)))
    if peak >= 1.0:
        raise ValueError(
            f"the stimulus clips at {distance_cm} cm (peak {peak:.2f}): lower level_dbfs"
        )
    return y


def activity_stimulus(spec: Mapping[str, Any]) -> np.ndarray:
    """The samples of one ``kind: activity`` stimulus (see the module docstring)."""
    activity, recording = str(spec["activity"]), int(spec["recording"])
    seconds = float(spec.get("seconds", 30))
    seed = int(spec.get("seed", 1))
    source = spec.get("source", "synthetic")
    if source == "synthetic":
        clean = synthetic_recording(activity, recording, seconds, seed)
    elif source == "recordings":
        clean = load_recording(spec["path"], seconds)
    else:
        raise ValueError(f"activity source {source!r}: expected one of {SOURCES}")
    distance = float(spec["distance_cm"])
    return at_distance(
        set_level(clean, float(spec.get("level_dbfs", -24.0))),
        distance,
        float(spec.get("reference_distance_cm", 10.0)),
        float(spec.get("distance_exponent", 1.0)),
        spec.get("room_noise_dbfs", -60.0),
        _rng(seed, "room", activity, recording, round(distance)),
    )
