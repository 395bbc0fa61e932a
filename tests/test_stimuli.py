"""The attack's activity stimuli: deterministic, 48 kHz mono, each with its activity's character.

The character checks measure the sound, not the code: each would fail if a generator were
swapped for another (typing is dense sharp clicks, a vacuum is steady with a hum peak, barks
come in bursts with quiet between, talking is espeak-ng speech, music is tonal, cooking is
broadband hiss with transients). The distance model is checked in dB, the real-recordings path
on short files written here, and the config expansion against config.yaml.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from reallymuted import study
from reallymuted.config import ConfigError, load_yaml, validate_config
from reallymuted.study import matrix
from reallymuted.testbed import activities, stimuli
from reallymuted.testbed.spec import SessionSpec, rule_params

RATE = stimuli.RATE
SCHEMA = Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"


def clean(activity: str, seconds: float = 20.0, recording: int = 1) -> np.ndarray:
    """The clean synthetic recording at its level, no distance, no room noise."""
    return activities.set_level(
        activities.synthetic_recording(activity, recording, seconds, seed=7), -24.0
    )


def frame_db(x: np.ndarray, seconds: float) -> np.ndarray:
    n = round(seconds * RATE)
    frames = x[: len(x) // n * n].reshape(-1, n)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(np.mean(frames**2, axis=1))


def spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy.signal import welch

    return welch(x, fs=RATE, nperseg=RATE // 2)  # 2 Hz resolution


# --- determinism and format --------------------------------------------------------------


@pytest.mark.parametrize("activity", sorted(study.ACTIVITIES))
def test_activity_stimuli_are_deterministic_48k_mono(activity: str, tmp_path: Path) -> None:
    spec = {"kind": "activity", "activity": activity, "recording": 2, "seconds": 6, "seed": 5}
    spec |= {"distance_cm": 25, "room_noise_dbfs": -60}
    first = stimuli.make_stimulus(spec, tmp_path / "a.wav")
    assert stimuli.make_stimulus(spec, tmp_path / "b.wav") == first, "byte-identical on rerun"
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    info = sf.info(str(tmp_path / "a.wav"))
    assert (info.samplerate, info.channels, info.frames) == (48000, 1, 6 * 48000)
    assert info.subtype == "PCM_16"
    assert stimuli.make_stimulus({**spec, "recording": 3}, tmp_path / "c.wav") != first
    assert stimuli.make_stimulus({**spec, "seed": 6}, tmp_path / "d.wav") != first


# Run in a child process: build each stimulus of argv[1] (name -> spec, JSON) into argv[2] and
# print name -> sha256. Each stimulus gets a HOME of its own with no sound-server state in it,
# as on a machine where no PulseAudio client has run yet for this user.
BUILD_IN_CHILD = """
import json, os, sys, tempfile
from reallymuted.testbed.stimuli import make_stimulus
specs, out = json.loads(sys.argv[1]), sys.argv[2]
digests = {}
for name, spec in specs.items():
    os.environ["HOME"] = tempfile.mkdtemp(prefix=f"home-{name}-")
    digests[name] = make_stimulus(spec, os.path.join(out, f"{name}.wav"))
print(json.dumps(digests))
"""


def short_study_stimuli(repo_root: Path) -> dict[str, dict]:
    """Every stimulus of the default study (speech, steps and the attack's activities at its
    distances), plus a tone, each cut to a few seconds."""
    config = validate_config(load_yaml(repo_root / "config.yaml"), SCHEMA)
    specs = {"tone": {"kind": "tone", "seconds": 1, "freq_hz": 440, "level": 0.5}}
    for name, spec in config["sessions"]["stimuli"].items():
        spec = {k: v for k, v in spec.items() if k != "apps"}
        if spec["kind"] == "steps":
            spec["step_s"] = 0.5
        else:
            spec["seconds"] = 3
        specs[name] = spec
    return specs


def test_every_stimulus_is_byte_identical_across_processes(repo_root: Path, tmp_path: Path) -> None:
    """Three builds in three processes (each with its own hash seed) give the same bytes.

    Each stimulus starts with an empty HOME and no XDG_RUNTIME_DIR, and the processes share
    one TMPDIR, as processes of one machine share /tmp: the state in which espeak-ng's audio
    probe made libpulse draw a runtime directory name from rand(), more draws the more such
    directories earlier processes had left, shifting the breath noise of the voices that have
    one (before the fix: tk2d25 differed in all three builds, as the study's had from a later
    build; nothing else did).
    """
    specs = short_study_stimuli(repo_root)
    kinds = {s["kind"] for s in specs.values()}
    activities = {s["activity"] for s in specs.values() if s["kind"] == "activity"}
    assert kinds == {"speech", "tone", "steps", "activity"} and activities == set(study.ACTIVITIES)
    shared_tmp = tmp_path / "tmp"
    shared_tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "XDG_RUNTIME"))}
    runs = []
    for rep in range(3):
        out = tmp_path / f"build{rep}"
        out.mkdir()
        child_env = {**env, "PYTHONHASHSEED": str(rep + 1), "TMPDIR": str(shared_tmp)}
        done = subprocess.run(
            [sys.executable, "-c", BUILD_IN_CHILD, json.dumps(specs), str(out)],
            capture_output=True,
            text=True,
            env=child_env,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads(done.stdout.splitlines()[-1]))
    assert all(set(run) == set(specs) for run in runs)
    differ = {name: [run[name][:8] for run in runs] for name in specs}
    differ = {name: d for name, d in differ.items() if len(set(d)) > 1}
    assert not differ, f"not byte-identical across processes: {differ}"
    # the files are what the digests say
    for name in specs:
        assert len({(tmp_path / f"build{rep}/{name}.wav").read_bytes() for rep in range(3)}) == 1
    # and espeak-ng left no sound-server state behind (libpulse's random runtime directory)
    assert not list(shared_tmp.glob("pulse-*"))


def test_a_recording_is_the_same_sound_at_every_distance() -> None:
    spec = {"activity": "kb", "recording": 1, "seconds": 5, "seed": 1, "room_noise_dbfs": None}
    near = activities.activity_stimulus({**spec, "distance_cm": 10})
    far = activities.activity_stimulus({**spec, "distance_cm": 50})
    assert np.allclose(far, near / 5.0)


# --- each activity's character -------------------------------------------------------------


def test_keyboard_is_dense_sharp_clicks() -> None:
    x = clean("kb")
    crest = np.max(np.abs(x)) / np.sqrt(np.mean(x**2))
    assert crest > 10, "clicks: peaks far above the RMS"
    # onsets: 5 ms frames jumping 15 dB above the previous 20 ms
    level = frame_db(x, 0.005)
    before = np.array([level[max(0, i - 4) : i].max(initial=-200) for i in range(len(level))])
    onsets = np.flatnonzero((level > before + 15) & (level > level.max() - 30))
    distinct = np.count_nonzero(np.diff(onsets, prepend=-100) > 6)  # >= 30 ms apart
    assert 3 <= distinct / 20 <= 15, f"{distinct / 20:.1f} keystrokes per second"
    vacuum = clean("vc")
    assert crest > 3 * np.max(np.abs(vacuum)) / np.sqrt(np.mean(vacuum**2))


def test_vacuum_is_steady_with_a_motor_hum_peak() -> None:
    x = clean("vc")
    assert np.std(frame_db(x, 0.1)) < 1.5, "steady level"
    freqs, power = spectrum(x)
    low = (freqs >= 50) & (freqs <= 1000)
    peak = np.argmax(np.where(low, power, 0))
    assert 110 <= freqs[peak] <= 190, "the fundamental of the motor"
    assert 10 * np.log10(power[peak] / np.median(power[low])) > 15, "a narrow tonal peak"
    typing = frame_db(clean("kb"), 0.1)
    assert np.std(typing[np.isfinite(typing)]) > 3 * np.std(frame_db(x, 0.1))


def test_dog_barks_in_bursts_with_quiet_between() -> None:
    x = clean("dg", seconds=30)
    level = frame_db(x, 0.05)
    quiet = np.mean(level < np.max(level) - 30)
    assert quiet > 0.4, f"only {quiet:.0%} of 50 ms frames quiet"
    loud = level > np.max(level) - 10
    bursts = np.count_nonzero(np.diff(loud.astype(int)) == 1)
    assert bursts >= 5
    freqs, power = spectrum(x)
    centroid = np.sum(freqs * power) / np.sum(power)
    assert 400 < centroid < 3000, "a voice, not hiss"


def test_talking_is_espeak_speech(monkeypatch: pytest.MonkeyPatch) -> None:
    x = clean("tk", seconds=20)
    # syllable rhythm: the envelope's modulation spectrum peaks at a few Hz
    envelope = 10 ** (frame_db(x, 0.01) / 20)
    modulation = np.abs(np.fft.rfft(envelope - envelope.mean())) ** 2
    rates = np.fft.rfftfreq(len(envelope), 0.01)
    band = (rates >= 0.5) & (rates <= 20)
    assert 1.5 <= rates[band][np.argmax(modulation[band])] <= 8
    freqs, power = spectrum(x)
    assert np.sum(power[(freqs > 100) & (freqs < 4000)]) / np.sum(power) > 0.8, "speech band"
    # the voices are espeak-ng's: without the program there is no talking activity
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(FileNotFoundError):
        activities.synthetic_recording("tk", 1, 5, seed=99)


def test_music_is_tonal_and_continuous() -> None:
    x = clean("cm")
    level = frame_db(x, 0.1)
    assert np.mean(level < np.max(level) - 30) < 0.05, "hardly ever silent"
    freqs, power = spectrum(x)
    band = (freqs > 50) & (freqs < 5000)
    flatness = np.exp(np.mean(np.log(power[band]))) / np.mean(power[band])
    assert flatness < 0.05, "harmonic lines, not noise"
    cooking = spectrum(clean("ck"))[1]
    assert flatness < np.exp(np.mean(np.log(cooking[band]))) / np.mean(cooking[band])


def test_cooking_is_broadband_hiss_with_transients() -> None:
    x = clean("ck")
    freqs, power = spectrum(x)
    assert np.sum(freqs * power) / np.sum(power) > 2000, "sizzle: high-frequency energy"
    level = frame_db(x, 0.01)
    assert np.percentile(level, 99) - np.median(level) > 6, "clatter above the sizzle"
    assert np.percentile(level, 5) > np.max(level) - 40, "the sizzle never stops"


# --- the distance model --------------------------------------------------------------------


def test_distance_attenuates_by_the_configured_db() -> None:
    assert activities.attenuation_db(10) == 0
    assert activities.attenuation_db(25) == pytest.approx(-7.959, abs=1e-3)
    assert activities.attenuation_db(100) == pytest.approx(-20.0)
    assert activities.attenuation_db(100, exponent=2) == pytest.approx(-40.0)
    assert activities.attenuation_db(50, reference_cm=25) == pytest.approx(-6.021, abs=1e-3)
    spec = {"activity": "vc", "recording": 1, "seconds": 4, "seed": 1, "room_noise_dbfs": None}
    rms = {
        d: np.sqrt(np.mean(activities.activity_stimulus({**spec, "distance_cm": d}) ** 2))
        for d in (10, 25, 100)
    }
    assert 20 * np.log10(rms[10]) == pytest.approx(-24.0, abs=0.01), "level_dbfs at 10 cm"
    assert 20 * np.log10(rms[100] / rms[10]) == pytest.approx(-20.0, abs=0.01)
    assert 20 * np.log10(rms[25] / rms[10]) == pytest.approx(-7.96, abs=0.01)
    steeper = activities.activity_stimulus({**spec, "distance_cm": 100, "distance_exponent": 1.5})
    assert 20 * np.log10(np.sqrt(np.mean(steeper**2)) / rms[10]) == pytest.approx(-30, abs=0.01)


def test_room_noise_is_added_at_its_level_and_seeded() -> None:
    spec = {"activity": "dg", "recording": 1, "seconds": 4, "seed": 1, "distance_cm": 50}
    quiet = activities.activity_stimulus({**spec, "room_noise_dbfs": None})
    noisy = activities.activity_stimulus({**spec, "room_noise_dbfs": -50})
    noise = noisy - quiet
    assert 20 * np.log10(np.sqrt(np.mean(noise**2))) == pytest.approx(-50, abs=0.01)
    assert np.array_equal(noisy, activities.activity_stimulus({**spec, "room_noise_dbfs": -50}))
    # pink: about 3 dB less power per octave
    freqs, power = spectrum(noise)
    octave = [power[(freqs >= f) & (freqs < 2 * f)].sum() for f in (250, 500, 1000, 2000)]
    assert np.diff(10 * np.log10(octave)) == pytest.approx([0, 0, 0], abs=1.0)
    with pytest.raises(ValueError, match="clips"):
        activities.activity_stimulus({**spec, "distance_cm": 1, "level_dbfs": -3})


# --- real recordings -------------------------------------------------------------------------


@pytest.fixture
def recordings(tmp_path: Path) -> Path:
    """Three short recordings in three formats, rates and channel counts, and a stray file."""
    folder = tmp_path / "typing"
    folder.mkdir()
    rng = np.random.default_rng(0)
    sf.write(str(folder / "b_desk.flac"), 0.1 * rng.standard_normal(16000 * 3), 16000)
    stereo = 0.2 * rng.standard_normal((44100 * 2, 2))
    sf.write(str(folder / "a_laptop.wav"), stereo, 44100, subtype="PCM_24")
    sf.write(str(folder / "c_office.ogg"), 0.1 * rng.standard_normal(48000 * 4), 48000)
    (folder / "README.txt").write_text("where these came from\n")
    return folder


def test_real_recordings_are_read_in_name_order(recordings: Path, tmp_path: Path) -> None:
    files = study.recording_files(recordings)
    assert [f.name for f in files] == ["a_laptop.wav", "b_desk.flac", "c_office.ogg"]
    attack = {
        "apps": ["attack-webex"],
        "activities": {"kb": {"source": "recordings", "dir": str(recordings)}, "vc": None},
        "recordings": 3,
        "distances_cm": [10, 50],
        "seconds": 2.5,
        "seed": 1,
    }
    specs = study.attack_stimuli(attack)
    assert list(specs)[:6] == ["kb1d10", "kb1d50", "kb2d10", "kb2d50", "kb3d10", "kb3d50"]
    assert len(specs) == 12 and specs["vc3d50"]["source"] == "synthetic"
    assert specs["kb2d50"]["path"] == str(recordings / "b_desk.flac")
    assert specs["kb2d50"]["apps"] == ["attack-webex"]
    for name, frames in (("kb1d10", 2 * 48000), ("kb2d50", round(2.5 * 48000))):
        stimuli.make_stimulus(specs[name], tmp_path / f"{name}.wav")
        info = sf.info(str(tmp_path / f"{name}.wav"))
        # a recording shorter than `seconds` is played whole (the session loops it)
        assert (info.samplerate, info.channels, info.frames) == (48000, 1, frames)
    x = sf.read(str(tmp_path / "kb1d10.wav"))[0]
    assert 20 * np.log10(np.sqrt(np.mean(x**2))) == pytest.approx(-24, abs=0.2)
    attack["recordings"] = 4
    with pytest.raises(ValueError, match="holds 3 recording"):
        study.attack_stimuli(attack)
    attack["activities"] = {"zz": None}
    with pytest.raises(ValueError, match="no synthetic generator"):
        study.attack_stimuli(attack)


# --- names and the configuration -------------------------------------------------------------


def test_names_are_path_parts_and_parse_back() -> None:
    name = study.activity_stimulus_name("kb", 12, 100)
    assert name == "kb12d100" and name.isalnum() and name.islower()
    assert study.parse_activity_stimulus_name(name) == ("kb", 12, 100)
    with pytest.raises(ValueError):
        study.parse_activity_stimulus_name("kb-1d10")


@pytest.fixture
def config(repo_root: Path) -> dict:
    return load_yaml(repo_root / "config.yaml")


def test_the_attack_is_part_of_the_study_matrix(config: dict) -> None:
    validated = validate_config(copy.deepcopy(config), SCHEMA)
    sessions = validated["sessions"]
    attack = validated["attack"]
    names = [n for n, s in sessions["stimuli"].items() if s["kind"] == "activity"]
    expected = len(attack["activities"]) * attack["recordings"] * len(attack["distances_cm"])
    assert len(names) == expected and all(n.isalnum() and n.islower() for n in names)
    runs = matrix(sessions)
    played = {(app, stim) for app, _mode, stim, _rep in runs}
    for app in attack["apps"]:
        # the attack's apps play every activity stimulus and nothing else
        assert {s for a, s in played if a == app} == set(names)
    others = {a for a, _ in played} - set(attack["apps"])
    assert others and not any(s in names for a, s in played if a in others)
    # validating again (the artifact does) changes nothing
    assert validate_config(copy.deepcopy(validated), SCHEMA) == validated
    config["stages"]["attack"] = False
    off = validate_config(copy.deepcopy(config), SCHEMA)
    assert not any(s["kind"] == "activity" for s in off["sessions"]["stimuli"].values())
    assert not any(app in attack["apps"] for app, *_ in matrix(off["sessions"]))


def test_attack_apps_have_their_own_schedule(config: dict) -> None:
    sessions = validate_config(copy.deepcopy(config), SCHEMA)["sessions"]
    spec = SessionSpec.from_config(sessions, "attack-webex", "app", "kb1d25", 1, "x.wav")
    assert spec.schedule == sessions["apps"]["attack-webex"]["schedule"]
    assert {p["state"] for p in spec.schedule} == {"muted"}
    assert set(spec.options) == {"profile", "telemetry_interval_s"}, "no matrix keys"
    spec.validate()
    normal = SessionSpec.from_config(sessions, "webex-2021", "app", "speech", 1, "x.wav")
    assert normal.schedule == sessions["schedule"]
    params = rule_params(sessions, "attack-webex")
    assert "schedule" not in params and "repetitions" not in params["apps"]["attack-webex"]
    assert rule_params(sessions, "webex-2021")["schedule"] == sessions["schedule"]


def test_a_bad_attack_config_is_refused(config: dict, recordings: Path) -> None:
    bad = copy.deepcopy(config)
    bad["attack"]["apps"] = ["attack-zoom"]
    with pytest.raises(ConfigError, match=r"attack-zoom.*not in sessions\.apps"):
        validate_config(bad, SCHEMA)
    bad = copy.deepcopy(config)
    bad["attack"]["activities"]["xx"] = None
    with pytest.raises(ConfigError, match=r"not classifier\.classes codes"):
        validate_config(bad, SCHEMA)
    bad = copy.deepcopy(config)
    bad["attack"]["activities"]["kb"] = {"source": "recordings", "dir": str(recordings)}
    bad["attack"]["recordings"] = 5
    with pytest.raises(ConfigError, match="holds 3 recording"):
        validate_config(bad, SCHEMA)
    bad = copy.deepcopy(config)
    bad["sessions"]["stimuli"]["kb1d25"] = {"kind": "tone"}
    with pytest.raises(ConfigError, match="clashes"):
        validate_config(bad, SCHEMA)


def test_full_config_gives_thirty_windows_per_activity(repo_root: Path) -> None:
    """Arithmetic on config/full.yaml (the sessions are not run): records per session from
    the muted time, the telemetry interval and the page's ~2 s start-up, windows of the
    longest n per session, times sessions per activity."""
    from snakemake.utils import update_config

    config = load_yaml(repo_root / "config.yaml")
    update_config(config, load_yaml(repo_root / "config/full.yaml"))
    config = validate_config(config, SCHEMA)
    attack = config["attack"]
    app = config["sessions"]["apps"]["attack-webex"]
    muted = sum(p["seconds"] for p in app["schedule"] if p["state"] == "muted")
    interval = app["telemetry_interval_s"]
    records = int((muted - 3.0) // interval)  # the clock starts up to ~3 s after join
    sessions = attack["recordings"] * len(attack["distances_cm"]) * app.get("repetitions", 1)
    for n in attack["classifier"]["windows"]:
        assert sessions * (records - n + 1) >= 30, f"n={n}"
