"""The workflow end to end, in a temporary directory: outputs, no spurious reruns, minimal reruns.

Runs the reference part of the study (user study, telemetry, classifier on two windows, claims)
with the repository's Snakefile, then the report.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.workflow


def snakemake(repo: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(repo / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "-c2",
        *args,
    ]
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


def planned_rules(repo: Path, workdir: Path) -> set[str]:
    """Rules a run would execute now (from a dry run's job table)."""
    run = snakemake(repo, workdir, "-n")
    text = run.stdout + run.stderr
    if "Nothing to be done" in text:
        return set()
    table = text.split("Job stats:", 1)[1]
    return {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+\s*$", table, re.M)} - {"total", "all"}


@pytest.fixture(scope="module")
def study(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("study")
    config = yaml.safe_load((repo_root / "config.yaml").read_text())
    config["stages"] = {name: name == "reference" for name in config["stages"]}
    config["classifier"]["windows"] = [3, 7]
    config["classifier"]["models"] = ["majority", "random_forest"]
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(repo_root, workdir)
    return workdir


def test_study_outputs_exist(study: Path) -> None:
    for name in [
        "results/tables/claims.md",
        "results/tables/claims.csv",
        "results/tables/classifier_metrics.csv",
        "results/figures/fig1_q1_why_mute.png",
        "results/figures/fig5_q5_mic_access_wanted.pdf",
        "results/figures/fig9_confusion_n7.png",
    ]:
        assert (study / name).stat().st_size > 0, name
    claims = (study / "results/tables/claims.md").read_text()
    assert "| U3 |" in claims and "| C3 |" in claims


def test_rerun_does_nothing(repo_root: Path, study: Path) -> None:
    assert planned_rules(repo_root, study) == set()


def test_deleting_one_output_reruns_only_its_dependents(repo_root: Path, study: Path) -> None:
    (study / "results/figures/fig1_q1_why_mute.png").unlink()
    assert planned_rules(repo_root, study) == {"userstudy_figure"}
    snakemake(repo_root, study)
    # a table: its job reruns, and with it everything downstream of that job's outputs
    (study / "results/tables/userstudy_kappa.csv").unlink()
    assert planned_rules(repo_root, study) == {
        "userstudy_tables",
        "userstudy_figure",
        "claims",
    }
    snakemake(repo_root, study)
    assert planned_rules(repo_root, study) == set()


def test_report_builds(repo_root: Path, study: Path) -> None:
    snakemake(repo_root, study, "--report", str(study / "results/report.html"))
    assert (study / "results/report.html").stat().st_size > 10_000
