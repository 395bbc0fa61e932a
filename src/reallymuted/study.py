"""The study itself, as the configuration defines it: its sessions and its vocabulary.

Read by every part of the project (the workflow, the testbed, the analysis, the artifact),
so it holds no code that runs a session or reads evidence:

* the study matrix: (app, mode, stimulus, repetition) of every session ``config['sessions']``
  asks for (:func:`matrix`);
* the attack's stimuli, generated from the ``attack`` section into ``sessions.stimuli``
  (:func:`add_attack_stimuli`), and the names of its activities and stimuli;
* the testbed profiles that post telemetry, and their default interval.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import soundfile as sf

# Keys of a `sessions.apps` entry that shape the study matrix, not the driver: they are never
# passed to the driver as options. `schedule` and `repetitions` replace the sessions' own for
# that app (the attack's apps are muted throughout); `stimulus_kinds` limits what it plays;
# `guard` runs the OS-level mute beside the client's own (docs/guard.md).
APP_KEYS = ("driver", "modes", "schedule", "stimulus_kinds", "repetitions", "guard")


def driver_options(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The options a ``sessions.apps`` entry passes to its driver (all but ``APP_KEYS``)."""
    return {k: v for k, v in entry.items() if k not in APP_KEYS}


def guard_twins(sessions: Mapping[str, Any], selected: set[str] | None = None) -> dict[str, str]:
    """Each guarded app (``guard: true``) of ``selected`` (default: every app) and its twin:
    the one unguarded app with the same driver, driver options and schedule, whose modes and
    stimulus kinds include the guarded app's, so that the two ran the same client the same way
    on the same stimuli. ValueError for a guarded app with no twin, with several, or whose
    twin is not selected."""
    apps = sessions["apps"]
    selected = set(apps) if selected is None else selected

    def same_client(guarded: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
        kinds = set(guarded.get("stimulus_kinds") or ["*"])
        other_kinds = set(other.get("stimulus_kinds") or ["*"])
        return (
            not other.get("guard")
            and other["driver"] == guarded["driver"]
            and driver_options(other) == driver_options(guarded)
            and other.get("schedule") == guarded.get("schedule")
            and set(guarded["modes"]) <= set(other["modes"])
            and ("*" in other_kinds or kinds <= other_kinds)
        )

    twins = {}
    for app, entry in sorted(apps.items()):
        if not entry.get("guard") or app not in selected:
            continue
        found = [other for other, e in sorted(apps.items()) if same_client(entry, e)]
        if len(found) != 1:
            raise ValueError(
                f"sessions.apps.{app} (guard: true) needs exactly one unguarded twin with the "
                f"same driver, options and schedule; found {found or 'none'}"
            )
        if found[0] not in selected:
            raise ValueError(f"sessions.apps.{app} (guard: true) runs, its twin {found[0]} not")
        twins[app] = found[0]
    return twins


# The testbed profiles that post per-interval telemetry to the collector (the others only
# send media), and their interval when the config gives none: Webex posts one record a
# minute (PAPER.md T1). reallymuted.testbed.drivers.profile runs them.
TELEMETRY_PROFILES = ("webex-2021",)
DEFAULT_INTERVAL_S = 60.0


# --- the study matrix ---------------------------------------------------------------------


class Session(NamedTuple):
    """One session of the study matrix (a tuple: ``session_dir(*session)`` is its folder)."""

    app: str
    mode: str
    stimulus: str
    rep: int


def matrix(sessions: Mapping[str, Any]) -> list[Session]:
    """(app, mode, stimulus, rep) of every session the config asks for.

    The structure is checked here (selected apps exist, stimuli name known apps); whether each
    app's driver knows its modes and options is the testbed's check
    (:func:`reallymuted.testbed.drivers.check_apps`). A stimulus that names ``apps`` is played
    by those apps only (e.g. a level staircase for the telemetry profile). ``select``, when
    given, keeps only those apps (an overlay cannot remove the apps config.yaml defines, since
    Snakemake merges mappings; config/native-*.yaml and config/web.yaml select theirs). An app
    that names ``stimulus_kinds`` plays only stimuli of those kinds (the attack's apps play
    only the ``activity`` stimuli that name them, never the study's speech).
    """
    selected = list(sessions.get("select") or sessions["apps"])
    missing = sorted(set(selected) - set(sessions["apps"]))
    if missing:
        raise ValueError(f"sessions.select: {missing} not in sessions.apps")
    for name, spec in sessions["stimuli"].items():
        unknown = sorted(set((spec or {}).get("apps", [])) - set(sessions["apps"]))
        if unknown:
            raise ValueError(f"sessions.stimuli.{name}.apps: {unknown} not in sessions.apps")
    return [
        Session(app, mode, stimulus, rep)
        for app, entry in sessions["apps"].items()
        if app in selected
        for mode in entry["modes"]
        for stimulus, spec in sessions["stimuli"].items()
        if _plays(app, entry, spec or {})
        for rep in range(1, int(entry.get("repetitions", sessions["repetitions"])) + 1)
    ]


def _plays(app: str, entry: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    """Whether ``app`` plays a stimulus: the stimulus may name its apps, the app its kinds."""
    kind = spec.get("kind", "speech")
    return app in spec.get("apps", [app]) and kind in entry.get("stimulus_kinds", [kind])


# --- the attack's activities and stimuli --------------------------------------------------

ACTIVITIES = {
    "cm": "classical music",
    "ck": "cooking/eating",
    "tk": "people talking",
    "dg": "dog barking",
    "kb": "keyboard typing",
    "vc": "vacuum/cleaning",
}
_NAME = re.compile(r"^(?P<activity>[a-z]+)(?P<recording>[0-9]+)d(?P<distance>[0-9]+)$")


def activity_stimulus_name(activity: str, recording: int, distance_cm: int) -> str:
    """``kb2d25``: keyboard typing, recording 2, at 25 cm (a path part: letters and digits)."""
    return f"{activity}{recording}d{distance_cm}"


def parse_activity_stimulus_name(name: str) -> tuple[str, int, int]:
    """(activity, recording, distance_cm) of :func:`activity_stimulus_name`'s names."""
    match = _NAME.match(name)
    if not match:
        raise ValueError(f"{name!r} is not an activity stimulus name like 'kb2d25'")
    return match["activity"], int(match["recording"]), int(match["distance"])


def recording_files(directory: str | Path) -> list[Path]:
    """The audio files of a directory of real recordings, in name order (recording 1 first).

    Every file soundfile can read counts (WAV, FLAC, OGG, ...); others (a README) are skipped.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(f"recordings directory {folder} does not exist")
    files = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            sf.info(str(path))
        except (RuntimeError, sf.LibsndfileError):
            continue
        files.append(path)
    return files


# What an activity stimulus inherits from the `attack` section (the rest is per stimulus).
ATTACK_STIMULUS_KEYS = (
    "seconds",
    "seed",
    "level_dbfs",
    "reference_distance_cm",
    "distance_exponent",
    "room_noise_dbfs",
)


def attack_stimuli(attack: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """One ``kind: activity`` stimulus per activity x recording x distance of the ``attack``
    config section, played by the attack's ``apps`` only; in activity, recording, distance
    order. A directory of real recordings must hold at least ``recordings`` audio files."""
    stimuli: dict[str, dict[str, Any]] = {}
    count = int(attack["recordings"])
    shared = {k: attack[k] for k in ATTACK_STIMULUS_KEYS if k in attack}
    for activity, entry in attack["activities"].items():
        entry = entry or {}
        source = entry.get("source", "synthetic")
        files: Sequence[Path] = []
        if source == "recordings":
            files = recording_files(entry["dir"])
            if len(files) < count:
                raise ValueError(
                    f"attack.activities.{activity}: {entry['dir']} holds {len(files)} "
                    f"recording(s), attack.recordings asks for {count}"
                )
        elif activity not in ACTIVITIES:
            raise ValueError(
                f"attack.activities.{activity}: no synthetic generator (known: "
                f"{', '.join(ACTIVITIES)}); give source: recordings and a dir"
            )
        for recording in range(1, count + 1):
            for distance in attack["distances_cm"]:
                spec: dict[str, Any] = {
                    "kind": "activity",
                    "activity": activity,
                    "recording": recording,
                    "source": source,
                    "distance_cm": int(distance),
                    **shared,
                    "apps": list(attack["apps"]),
                }
                if source == "recordings":
                    spec["path"] = str(files[recording - 1])
                stimuli[activity_stimulus_name(activity, recording, int(distance))] = spec
    return stimuli


def add_attack_stimuli(config: dict[str, Any]) -> dict[str, Any]:
    """Put the attack's stimuli into ``config['sessions']['stimuli']`` (stage ``attack`` on).

    So the attack's sessions are sessions of the study matrix like any other (same rules,
    evidence contract, replay and artifact); nothing is added when the stage is off.
    Idempotent; a hand-written stimulus of the same name must be the same spec.
    """
    attack = config.get("attack")
    if not attack or not config.get("stages", {}).get("attack"):
        return config
    sessions = config.setdefault("sessions", {})
    apps = sessions.get("apps", {})
    missing = [a for a in attack["apps"] if a not in apps]
    if missing:
        raise ValueError(f"attack.apps: {missing} not in sessions.apps")
    codes = [c["code"] for c in config.get("classifier", {}).get("classes", [])]
    unknown = [a for a in attack["activities"] if codes and a not in codes]
    if unknown:
        raise ValueError(f"attack.activities: {unknown} are not classifier.classes codes")
    stimuli = sessions.setdefault("stimuli", {})
    for name, spec in attack_stimuli(attack).items():
        if name in stimuli and stimuli[name] != spec:
            raise ValueError(f"sessions.stimuli.{name} clashes with the attack's stimulus {name}")
        stimuli[name] = spec
    return config
