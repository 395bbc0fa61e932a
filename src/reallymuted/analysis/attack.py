"""The paper's attack on evidence this project captures: activities heard through Webex telemetry.

While the user is muted, a background activity (PAPER.md C1) plays into the microphone; the
``webex-2021`` testbed profile keeps reading it and posts a ``wmequality`` record with the
interval's gain statistics (T1); the attacker — anyone who sees the plaintext telemetry —
infers the activity from the gains (C2-C6). Here every step is evidence the testbed captures:

1. **Stimuli** (:mod:`reallymuted.testbed.stimuli`): the ``attack`` config section generates one
   ``kind: activity`` stimulus per activity x recording x distance (e.g. ``kb2d25``), played by
   the attack's apps only (``attack.apps``, muted from join to leave: a per-app ``schedule``).
   They are sessions of the study matrix like any other (same rules, evidence, replay); this
   module says which sessions are the attack's (:func:`attack_sessions`).
2. **Decoded telemetry**: :mod:`reallymuted.analysis.telemetry.sessions` decodes every record
   from each session's pcap (pyshark) and pairs it with the collector's log;
   :mod:`reallymuted.analysis.attack_telemetry` adds to each decoded interval what was played
   (activity, recording, distance, ``stimulus_source``), where its evidence is (pcap and frame,
   collector log and line) and the **input level** of the samples actually fed during the
   interval, unweighted and A-weighted (:func:`reallymuted.analysis.attack_input.input_levels`):
   the OS witness's tick log says which 20 ms ticks PulseAudio accepted and the tick index says
   which samples of the stimulus WAV each one carried (the writer loops the WAV on a tick grid).
3. **Figure 7 analogue**: decoded mean and min gain against the input level in dB(A) per
   interval, with Pearson's r (the paper's T2: mean gain correlates more than min gain;
   :func:`reallymuted.analysis.attack_telemetry.telemetry_values`).
4. **Classifier**: the reference classifier's own code
   (:func:`reallymuted.analysis.classifier.windows`,
   :func:`~reallymuted.analysis.classifier_training.evaluate_protocol`) on the captured triples,
   cross-validated over recordings
   (:func:`reallymuted.analysis.attack_classifier.cross_validate`): each fold holds out one
   recording of every activity (at every distance), trains on the others with the reference's
   grouped model selection inside, and the held-out predictions are pooled. A window never
   mixes two sessions and no recording is on both sides of any split (the ``group`` column).

Outputs carry ``source`` = ``testbed-profile`` (a model of Webex measured for real, never Webex
itself) and ``stimulus_source`` = ``synthetic`` | ``recordings``; synthetic stimuli are the
project's procedural sounds, so accuracy on them is not the paper's figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reallymuted.study import ACTIVITIES, DEFAULT_INTERVAL_S, TELEMETRY_PROFILES, matrix

SOURCE = "testbed-profile"


def telemetry_apps(config: Mapping[str, Any]) -> list[str]:
    """The attack's apps whose sessions post Webex telemetry (the webex-2021 profile)."""
    apps = config["sessions"]["apps"]
    return [
        app
        for app in config["attack"]["apps"]
        if apps[app]["driver"] == "profile" and apps[app].get("profile") in TELEMETRY_PROFILES
    ]


def attack_sessions(
    config: Mapping[str, Any], telemetry_only: bool = True, guarded: bool | None = False
) -> list[tuple[str, str, str, int]]:
    """(app, mode, stimulus, rep) of every telemetry session of the attack in the study matrix
    (none when the stage is off or ``sessions.select`` leaves the attack's apps out); with
    ``telemetry_only=False`` the sessions of every attack app (the leakage test's). Those of
    the apps without the OS-level mute by default, ``guarded=True`` those with it (``guard:
    true``, docs/guard.md), ``None`` both."""
    if not config["stages"].get("attack"):
        return []
    apps = set(telemetry_apps(config) if telemetry_only else config["attack"]["apps"])
    entries = config["sessions"]["apps"]
    if guarded is not None:
        apps = {a for a in apps if bool(entries[a].get("guard")) == guarded}
    stimuli = config["sessions"]["stimuli"]
    return [
        key
        for key in matrix(config["sessions"])
        if key[0] in apps and stimuli[key[2]].get("kind") == "activity"
    ]


def interval_seconds(config: Mapping[str, Any]) -> float:
    """The attack's telemetry interval (one for all its telemetry apps: windows mix none)."""
    apps = config["sessions"]["apps"]
    values = {
        float(apps[a].get("telemetry_interval_s", DEFAULT_INTERVAL_S))
        for a in telemetry_apps(config)
    }
    if len(values) != 1:
        raise ValueError(f"attack.apps: one telemetry interval needed, got {sorted(values)}")
    return values.pop()


def activity_names(config_classes: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Class code -> readable name: the classifier's classes, else the stimuli's defaults."""
    return {**ACTIVITIES, **{c["code"]: c["name"] for c in config_classes}}
