"""What every stimulus is made of: the microphone's sample rate, the sentences spoken, espeak-ng
called so that its samples depend on its arguments only, and resampling to the rate."""

from __future__ import annotations

import os
import subprocess
import tempfile
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf

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


def espeak_env(home: str | Path) -> dict[str, str]:
    """The environment of one espeak-ng call, so that its samples depend on its arguments only.

    espeak-ng 1.51 (Debian 12) probes for a sound server even when it only writes a file:
    pcaudiolib opens a PulseAudio playback stream at start-up. Where the user has no PulseAudio
    runtime directory yet (no XDG_RUNTIME_DIR, and ~/.config/pulse/<machine-id>-runtime missing
    or dangling: a fresh machine, the first sound client since /tmp was cleared), libpulse
    creates /tmp/pulse-XXXXXXXXXXXX with a name of 12 draws of the C library's rand(); every
    process starts rand() from the same seed, so it tries the same names in turn and draws 12
    more for each one an earlier process left in /tmp. espeak-ng's breath noise (voices with
    ``breath``, e.g. en+f2 and en+f3 of ``activities.VOICES``) draws from that same rand(), so the
    clip of that one call depended on the machine's history: this is how a study's tk2d25 (the
    only default stimulus with such voices) came out other than a later build of its spec.
    Here the probe is pointed at a socket that cannot exist: it fails at once, before libpulse
    looks for a runtime directory, and touches no running sound server. HOME is the call's own
    empty directory, so neither ~/.config/pulse nor an ~/espeak-ng-data (which would replace
    the installed voices) is read.
    """
    return {
        **os.environ,
        "HOME": str(home),
        "PULSE_SERVER": f"unix:{Path(home) / 'no-sound-server'}",
    }


def speak(
    text: str, voice: str, words_per_minute: int, pitch: int | None = None
) -> tuple[np.ndarray, int]:
    argv = ["espeak-ng", "-v", voice, "-s", str(words_per_minute)]
    if pitch is not None:
        argv += ["-p", str(pitch)]
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(
            [*argv, "-w", str(wav), text], check=True, capture_output=True, env=espeak_env(tmp)
        )
        data, rate = sf.read(str(wav), dtype="float64", always_2d=True)
    return data[:, 0], rate


def resample(x: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE:
        return x
    from scipy.signal import resample_poly  # slow to import; only stimulus building needs it

    g = gcd(RATE, rate)
    return resample_poly(x, RATE // g, rate // g)
