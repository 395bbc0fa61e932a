"""Where everything is: the repository's own files, and the study's results layout.

The only module that spells the layout of ``results/``; the workflow's rule files, the testbed
(which writes raw evidence) and the analysis (which reads it) all take their paths from here.
Results paths are relative to the working directory of the run (Snakemake's ``-d``), so that a
study can live anywhere; repository paths are absolute.

A session's folder is ``results/raw/{app}/{mode}-{stimulus}/rep{rep}`` (the evidence contract,
docs/evidence.md), its analysis files are under the same names below ``results/sessions/``,
and its timeline figure is ``results/figures/timelines/{app}/{mode}-{stimulus}-rep{rep}.*``.
``{mode}-{stimulus}`` is the session's *condition*: stimulus names have no ``-``.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parents[1]
APPS_REGISTRY = REPO / "workflow" / "apps.yaml"
CONFIG_SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
APPS_SCHEMA = REPO / "workflow" / "schemas" / "apps.schema.yaml"

# --- results/ (relative to the run's working directory) --------------------------------------

RESULTS = "results"
RAW = f"{RESULTS}/raw"  # raw evidence, one folder per session (written by the testbed)
SESSIONS = f"{RESULTS}/sessions"  # per-session analysis files, same folder names as RAW
STIMULI = f"{RESULTS}/stimuli"  # what the sessions played into the microphone
VALUES = f"{RESULTS}/values"  # each stage's named values, which the claims table reads
TIMELINES = f"{RESULTS}/figures/timelines"

# The evidence files of every session (docs/evidence.md); drivers may add their own.
EVIDENCE = ("events.jsonl", "mic_trace.jsonl", "traffic.pcapng", "client.log")
MANIFEST = "manifest.json"  # written last: its presence means the evidence is complete
FAILED = "manifest.failed.json"  # the only file a failed session leaves
STAGE = ".session"  # working folder of a running session, inside its own folder
SESSION_PLAN = "logs/sessions/plan.json"  # the sessions a run set out to make (progress)
ATTEMPTS = "failed-attempts"  # a retried session's failed attempts, inside its folder


def condition(mode: str, stimulus: str) -> str:
    """``{mode}-{stimulus}``: a session's condition, the middle part of its folder."""
    return f"{mode}-{stimulus}"


def session_dir(app: str, mode: str, stimulus: str, rep: int | str, root: str = RAW) -> str:
    """``results/raw/{app}/{mode}-{stimulus}/rep{rep}``: one session's raw evidence (under
    ``root=SESSIONS``: its analysis files). With ``"{app}"`` and so on, the rule pattern."""
    return f"{root}/{app}/{condition(mode, stimulus)}/rep{rep}"


def analysis_dir(app: str, mode: str, stimulus: str, rep: int | str) -> str:
    """``results/sessions/{app}/{mode}-{stimulus}/rep{rep}``: one session's analysis files."""
    return session_dir(app, mode, stimulus, rep, root=SESSIONS)


def timeline(app: str, mode: str, stimulus: str, rep: int | str, ext: str) -> str:
    """The timeline figure of one session."""
    return f"{TIMELINES}/{app}/{condition(mode, stimulus)}-rep{rep}.{ext}"


def stimulus_wav(name: str) -> str:
    """The WAV file a stimulus is made into and played from."""
    return f"{STIMULI}/{name}.wav"


def analysis_of(raw_dir: str) -> str:
    """The analysis folder of a raw-evidence folder (same app, condition and repetition)."""
    prefix = f"{RAW}/"
    if not raw_dir.startswith(prefix):
        raise ValueError(f"{raw_dir} is not a session folder under {RAW}/")
    return f"{SESSIONS}/{raw_dir.removeprefix(prefix)}"
