"""Artifact round trip: a small study is packed, then verified from a fresh copy of the
checkout, rebuilding every table and figure from the archive's raw evidence alone.

The study replays the three real sessions of tests/data/sessions (control client, baresip,
Chromium; recorded by the instrument itself) next to the reference stage with a reduced
classifier, so the round trip needs neither root nor a capture and takes about a minute.
Tampering with the archive, a stale study and a changed pixel must each be caught. The stimuli
the sessions played are evidence: the replay reads the archived WAVs and never makes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from PIL import Image

from reallymuted import artifact, debian
from reallymuted.paths import EVIDENCE, MANIFEST, session_dir
from reallymuted.study import matrix
from reallymuted.testbed.stimuli import make_stimulus

pytestmark = pytest.mark.workflow

SESSIONS = {  # app -> (driver, mode, options) of tests/data/sessions/{app}/{mode}-tone/rep1
    "control-stops": ("control", "ctrl", {"policy": "stops"}),
    "baresip-pcmu": ("baresip", "ctrl", {"codec": "pcmu"}),
    "chromium": ("chromium", "soft", {"dtx": False}),
}


def small_config(repo: Path) -> dict:
    config = yaml.safe_load((repo / "config.yaml").read_text())
    config["stages"] = {"reference": True, "sessions": True}
    config["classifier"]["windows"] = [3]
    config["classifier"]["models"] = ["majority", "random_forest"]
    sessions = config["sessions"]
    sessions["replay"] = True
    sessions["repetitions"] = 1
    sessions["schedule"] = [
        {"state": "unmuted", "seconds": 1},
        {"state": "muted", "seconds": 1.5},
        {"state": "unmuted", "seconds": 1},
    ]
    sessions["stimuli"] = {"tone": {"kind": "tone", "seconds": 0.5, "freq_hz": 440, "level": 0.5}}
    sessions["apps"] = {
        app: {"driver": driver, "modes": [mode], **options}
        for app, (driver, mode, options) in SESSIONS.items()
    }
    return config


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)


@pytest.fixture(scope="module")
def study(repo_root: Path, reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("study")
    for app, (_driver, mode, _options) in SESSIONS.items():
        shutil.copytree(
            repo_root / f"tests/data/sessions/{app}/{mode}-tone/rep1",
            workdir / f"results/raw/{app}/{mode}-tone/rep1",
        )
    config = small_config(repo_root)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    # the WAV the sessions played (tests/data/sessions/README.md), as a capture leaves it
    (workdir / "results/stimuli").mkdir(parents=True)
    tone = make_stimulus(
        config["sessions"]["stimuli"]["tone"], workdir / "results/stimuli/tone.wav"
    )
    assert tone.startswith("0848306f"), "not the stimulus of the sessions' manifests"
    command = artifact.snakemake_command(repo_root, workdir, [workdir / "config.yaml"])
    command += ["--workflow-profile", str(repo_root / "workflow/profiles/default"), "-c2"]
    done = run(command)
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir


@pytest.fixture(scope="module")
def archive(repo_root: Path, study: Path) -> Path:
    out = study.parent / "dist"
    command = [sys.executable, "-m", "reallymuted.artifact", "pack", "--workdir", str(study)]
    command += ["--configfile", str(study / "config.yaml"), "--out", str(out)]
    # with the reference data: the fresh clone below has no ../shared beside it
    packed = run([*command, "--with-reference"])
    assert packed.returncode == 0, packed.stderr[-3000:]
    (path,) = out.glob("reallymuted-artifact-*.tar.gz")
    return path


@pytest.fixture(scope="module")
def fresh_clone(repo_root: Path, archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout's files (tracked and new) copied with the time of copying, as a fresh
    clone has them: every code file is newer than every archived output."""
    clone = tmp_path_factory.mktemp("clone")
    for name in artifact.code_files(repo_root):
        target = clone / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo_root / name, target)
    now = time.time()
    for path in clone.rglob("*"):
        os.utime(path, (now, now))
    return clone


def verify_from(clone: Path, archive: Path, workdir: Path) -> subprocess.CompletedProcess:
    """`make verify-artifact` as run in ``clone`` (its own package on the path)."""
    env = {**os.environ, "PYTHONPATH": str(clone / "src")}
    command = [sys.executable, "-m", "reallymuted.artifact", "--repo", str(clone), "verify"]
    return run([*command, str(archive), "--workdir", str(workdir), "--cores", "2"], env=env)


def test_archive_holds_evidence_outputs_and_provenance(archive: Path) -> None:
    with tarfile.open(archive) as tar:
        names = {m.name.removeprefix(f"{artifact.TOP}/") for m in tar.getmembers()}
        manifest = json.load(tar.extractfile(f"{artifact.TOP}/{artifact.MANIFEST}"))
    for app, (_driver, mode, _options) in SESSIONS.items():
        for evidence in ("manifest.json", "events.jsonl", "traffic.pcapng", "mic_trace.jsonl"):
            assert f"results/raw/{app}/{mode}-tone/rep1/{evidence}" in names
    for name in [
        "results/tables/claims.csv",
        "results/tables/session_states.csv",
        "results/figures/fig12_confusion_n3.pdf",
        "results/figures/timelines/chromium/soft-tone-rep1.png",
        "reference/UserStudy/clean_survey_file_total.csv",
        "config.yaml",
        artifact.SUMS,
    ]:
        assert name in names, name
    assert manifest["git"]["commit"] and len(manifest["git"]["commit"]) == 40
    assert manifest["config"]["classifier"]["windows"] == [3]
    assert manifest["tools"]["python_packages"]["snakemake"]
    # the installed Debian set, and where it is not what envs/apt.lock says
    installed = manifest["tools"]["debian_packages"]
    assert installed["tshark"] and installed["chromium"]
    lock = debian.read_lock(artifact.default_repo() / debian.LOCK)
    drifted = {d["package"]: d["installed"] for d in manifest["tools"]["debian_drift"]}
    assert drifted == {n: v for n, v in installed.items() if v != lock[n]}
    assert "src/reallymuted/artifact/pack.py" in manifest["code"]
    roles = {e["role"] for e in manifest["files"].values()}
    assert {"evidence", "output", "log", "reference", "config"} <= roles
    for name, entry in manifest["files"].items():
        assert len(entry["sha256"]) == 64 and name in names


def test_fresh_clone_rebuilds_identical_tables_and_figures(
    archive: Path, fresh_clone: Path, tmp_path: Path
) -> None:
    started = time.time()
    verified = verify_from(fresh_clone, archive, tmp_path / "verify")
    assert verified.returncode == 0, verified.stdout[-4000:] + verified.stderr[-3000:]
    assert "verdict: REPRODUCED" in verified.stdout
    report = (tmp_path / "verify/verify-report.md").read_text()
    assert "pixel tolerance 0/255" in report
    # every compared output was computed again, after the start (no mtime shortcut)
    manifest = json.loads((tmp_path / f"verify/archive/{artifact.TOP}/MANIFEST.json").read_text())
    compared = [n for n, e in manifest["files"].items() if e["role"] == "output"]
    assert any(n.startswith("results/tables/") for n in compared)
    assert any(n.endswith(".png") for n in compared) and any(n.endswith(".pdf") for n in compared)
    for name in compared:
        assert (tmp_path / "verify/rebuild" / name).stat().st_mtime >= started - 1, name
    assert f"outputs compared: {len(compared)} ({len(compared)} identical)" in report
    # the stimulus is the archived one, in place, not made again
    tone = "results/stimuli/tone.wav"
    assert manifest["files"][tone]["role"] == "stimulus"
    assert "stimuli: 1 archived, replayed as archived\n" in report
    archived = tmp_path / f"verify/archive/{artifact.TOP}/{tone}"
    assert (tmp_path / "verify/rebuild" / tone).read_bytes() == archived.read_bytes()
    assert not (tmp_path / "verify/rebuild/logs/stimuli").exists()
    # versions are reported beside the verdict: the study's against the lock and this machine
    assert "## Versions (reported; the verdict rests on the outputs)" in report
    assert "- this machine vs the study: " in report


def test_verification_reports_packages_that_differ_from_the_study(tmp_path: Path) -> None:
    """A study made with other Debian builds than this machine has: named, with both versions,
    and a build of another major version marked as a failure of the lock."""
    repo = artifact.default_repo()
    lock = debian.read_lock(repo / debian.LOCK)
    here = debian.installed_versions(lock)
    if not here["tshark"]:
        pytest.skip("tshark is not installed (run `make setup`)")
    study = {**lock, "tshark": "3.6.2-1"}
    lines = artifact.versions_report({"tools": {"debian_packages": study}}, repo)
    assert lines[0] == f"- Debian packages (the study's vs envs/apt.lock): {len(lock) - 1} of " + (
        f"{len(lock)} as locked"
    )
    assert (
        "  - FAIL: tshark: another major version, installed 3.6.2-1, locked " + (lock["tshark"])
        in lines
    ), lines
    assert f"  - tshark: 3.6.2-1 in the study, {here['tshark']} here" in lines, lines
    differ = sum(here[n] != v for n, v in study.items())
    summary = f"- this machine vs the study: {len(study) - differ} of the {len(study)} packages "
    assert summary + "the study had installed at the study's version" in lines, lines
    # a package the study did not have installed (a cluster package) counts neither way
    without = {**study, "munge": None}
    lines = artifact.versions_report({"tools": {"debian_packages": without}}, repo)
    unchanged = len(study) - 1 - sum(here[n] != v for n, v in without.items() if v)
    assert (
        f"- this machine vs the study: {unchanged} of the {len(study) - 1} packages "
        + ("the study had installed at the study's version")
        in lines
    ), lines


def test_by_default_the_authors_data_is_named_not_packed(
    repo_root: Path, study: Path, tmp_path: Path
) -> None:
    """The released data carries no license: an archive records its digests only."""
    path = artifact.pack(repo_root, study, [study / "config.yaml"], tmp_path)
    with tarfile.open(path) as tar:
        names = [m.name for m in tar.getmembers()]
        manifest = json.load(tar.extractfile(f"{artifact.TOP}/{artifact.MANIFEST}"))
    assert not [n for n in names if n.startswith(f"{artifact.TOP}/reference/")]
    assert manifest["reference"]["packed"] is False
    assert "UserStudy/clean_survey_file_total.csv" in manifest["reference"]["sha256"]


def test_a_tampered_archive_fails_before_any_rebuild(archive: Path, tmp_path: Path) -> None:
    unpacked = tmp_path / "unpacked"
    artifact.extract(archive, unpacked)
    table = unpacked / artifact.TOP / "results/tables/mic_policy.csv"
    table.write_text(table.read_text().replace("stops", "continuous"))
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(tampered, "w:gz") as tar:
        tar.add(unpacked / artifact.TOP, arcname=artifact.TOP)
    result = artifact.verify(tampered, artifact.default_repo(), tmp_path / "verify")
    assert not result.ok
    assert result.integrity == ["results/tables/mic_policy.csv: sha256 differs from SHA256SUMS"]
    assert not (tmp_path / "verify/rebuild").exists()
    assert "NOT REPRODUCED" in result.summary()


def test_a_changed_output_is_reported_with_where_it_differs(study: Path, tmp_path: Path) -> None:
    names = ["results/tables/claims.csv", "results/figures/fig8_gain_space.png"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(study / name, tmp_path / name)
    assert all(c.status == "identical" for c in artifact.compare_trees(study, tmp_path, names))
    claims = tmp_path / names[0]
    lines = claims.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace(",", ";", 1)
    claims.write_text("".join(lines))
    image = np.asarray(Image.open(tmp_path / names[1]).convert("RGBA")).copy()
    red = int(image[10, 10, 0])
    image[10, 10, 0] = red - 3 if red >= 3 else red + 3
    Image.fromarray(image).save(tmp_path / names[1])
    by_path = {c.path: c for c in artifact.compare_trees(study, tmp_path, names)}
    table, figure = by_path[names[0]], by_path[names[1]]
    assert table.status == "differs" and table.detail.endswith("first different line 3"), table
    assert figure.status == "differs", figure
    assert "max channel difference 3/255 in 1 of" in figure.detail, figure
    by_path = {c.path: c for c in artifact.compare_trees(study, tmp_path, names, tolerance=3)}
    assert by_path[names[1]].status == "pixels-within-tolerance"


def test_pack_refuses_a_study_with_stale_outputs(
    repo_root: Path, study: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "study"
    shutil.copytree(study, copy, symlinks=True)
    (copy / "results/tables/mic_policy.csv").unlink()
    with pytest.raises(artifact.ArtifactError, match=r"mic_policy\.csv \(session_tables"):
        artifact.pack(repo_root, copy, [copy / "config.yaml"], tmp_path / "dist")
    assert not (tmp_path / "dist").exists()


def test_replay_without_the_evidence_stops_with_the_missing_files(
    repo_root: Path, study: Path, tmp_path: Path
) -> None:
    (tmp_path / "results/raw/chromium/soft-tone/rep1").mkdir(parents=True)
    shutil.copy(study / "config.yaml", tmp_path / "config.yaml")
    command = artifact.snakemake_command(repo_root, tmp_path, [tmp_path / "config.yaml"])
    dry = run([*command, "-n"])
    assert dry.returncode != 0
    text = dry.stdout + dry.stderr
    assert "sessions.replay is on" in text
    assert "results/raw/chromium/soft-tone/rep1: missing manifest.json, events.jsonl" in text
    assert "results/raw/control-stops/ctrl-tone/rep1: missing manifest.json" in text


def test_the_replay_reads_the_archived_stimuli_and_never_makes_them(
    repo_root: Path, reference_dir: Path, tmp_path: Path
) -> None:
    """The default study (the attack on): its 20 archived stimuli, none of them what the
    generator makes, extracted with the old times of an archive, are placed for the replay;
    a dry run then plans the attack's analysis on them and no stimulus job."""
    config = artifact.effective_config(repo_root, repo_root, [])
    root, rebuild = tmp_path / "archive", tmp_path / "rebuild"
    for key in matrix(config["sessions"]):  # the raw evidence: only its presence matters here
        folder = root / session_dir(*key)
        folder.mkdir(parents=True)
        for name in (MANIFEST, *EVIDENCE, "collector.jsonl"):
            (folder / name).write_text("")
    files = {}
    old = time.time() - 30 * 86400  # packed a month ago: older than this checkout's code
    for index, name in enumerate(config["sessions"]["stimuli"]):
        path = root / f"results/stimuli/{name}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        tone = 0.1 * np.sin(2 * np.pi * (300 + 10 * index) * np.arange(4800) / 48000)
        sf.write(str(path), tone, 48000, subtype="PCM_16")
        os.utime(path, (old, old))
        files[f"results/stimuli/{name}.wav"] = {"sha256": sha256(path), "role": "stimulus"}
    assert len(files) == 20 and any(n.startswith("results/stimuli/tk2") for n in files)
    placed = artifact.prepare_rebuild(root, {"config": config, "files": files}, rebuild)

    assert sorted(s.path for s in placed) == sorted(files)
    for name in files:
        assert (rebuild / name).read_bytes() == (root / name).read_bytes(), name
    dry_run = [*artifact.snakemake_command(repo_root, rebuild, [rebuild / "config.yaml"]), "-n"]
    planned = run(dry_run)
    assert planned.returncode == 0, planned.stdout[-3000:] + planned.stderr[-3000:]
    assert "rule attack_telemetry:" in planned.stdout, "the stimuli's reader is planned"
    assert "_stimulus:" not in planned.stdout, "a stimulus would be made again"
    assert artifact.stimulus_problems(rebuild, placed) == []

    # copied with the archive's times instead (older than the stimulus code), still none is
    # made: a replay has no stimulus rule; a rewritten one would fail the verification
    for name in files:
        shutil.copy2(root / name, rebuild / name)
    stale = run(dry_run)
    assert stale.returncode == 0 and "_stimulus:" not in stale.stdout, stale.stdout[-3000:]
    (rebuild / "results/stimuli/extra.wav").write_bytes(b"")
    problems = artifact.stimulus_problems(rebuild, placed)
    assert len(problems) == 21
    assert "results/stimuli/tk2d25.wav: made again by the rebuild, not the archived one" in problems
    assert "results/stimuli/extra.wav: not in the archive; made by the rebuild" in problems
