"""The workflow end to end, in a temporary directory: outputs, no spurious reruns, minimal reruns.

Runs the reference part of the study (user study, telemetry, classifier on two windows, claims)
with a copy of the repository's code (so that a test may edit a module), then the report.
"""

from __future__ import annotations

import modulefinder
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import workflow_rules

from reallymuted import codegraph

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
def code(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The workflow's code, copied: what the study below runs."""
    copy = tmp_path_factory.mktemp("code")
    for name in ("Snakefile", "config.yaml"):
        shutil.copy2(repo_root / name, copy / name)
    for name in ("workflow", "scripts", "src", "envs"):
        shutil.copytree(repo_root / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@pytest.fixture(scope="module")
def study(code: Path, reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("study")
    config = yaml.safe_load((code / "config.yaml").read_text())
    config["stages"] = {name: name == "reference" for name in config["stages"]}
    config["classifier"]["windows"] = [3, 7]
    config["classifier"]["models"] = ["majority", "random_forest"]
    config["reference"]["dir"] = str(reference_dir)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(code, workdir)
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


def test_rerun_does_nothing(code: Path, study: Path) -> None:
    assert planned_rules(code, study) == set()


def test_deleting_one_output_reruns_only_its_dependents(code: Path, study: Path) -> None:
    (study / "results/figures/fig1_q1_why_mute.png").unlink()
    assert planned_rules(code, study) == {"userstudy_figure"}
    snakemake(code, study)
    # a table: its job reruns, and with it everything downstream of that job's outputs
    (study / "results/tables/userstudy_kappa.csv").unlink()
    assert planned_rules(code, study) == {
        "userstudy_tables",
        "userstudy_figure",
        "claims",
    }
    snakemake(code, study)
    assert planned_rules(code, study) == set()


def test_report_builds(code: Path, study: Path) -> None:
    snakemake(code, study, "--report", str(study / "results/report.html"))
    assert (study / "results/report.html").stat().st_size > 10_000


def detailed_summary(code: Path, workdir: Path) -> list[dict[str, str]]:
    """Snakemake's detailed summary: per output file its rule, input files and plan."""
    run = snakemake(code, workdir, "--detailed-summary")
    lines = [line.split("\t") for line in run.stdout.splitlines() if "\t" in line]
    header = lines[0]
    return [dict(zip(header, row, strict=False)) for row in lines[1:]]


def imports_module(code: Path, script: Path, module: str) -> bool:
    """Whether running ``script`` imports ``module`` of the copied package, by Python's own
    module finder (every import statement, in functions too): an oracle independent of
    reallymuted.codegraph, which computes the rules' code inputs."""
    finder = modulefinder.ModuleFinder(path=[str(code / "src")])
    finder.run_script(str(script))
    return module in finder.modules


def code_inputs(workdir: Path, inputs: list[str]) -> set[str]:
    """The package files a job's code digest input stands for (reallymuted.codegraph)."""
    files = set()
    for name in inputs:
        if name.endswith(".sha256") and "reallymuted-code" in name:
            files.update(codegraph.digest_files(workdir / name))
    return files


@pytest.mark.parametrize(
    "module",
    ["reallymuted.analysis.classifier", "reallymuted.io", "reallymuted.analysis.userstudy"],
)
def test_editing_a_module_reruns_exactly_the_jobs_whose_code_imports_it(
    code: Path, study: Path, module: str
) -> None:
    """The jobs whose code inputs hold the edited module are exactly those whose script imports
    it, by Python's own module finder; every job planned is one of them or downstream of one."""
    path = code / "src" / (module.replace(".", "/") + ".py")
    before = path.stat()
    original = path.read_text()
    try:
        path.write_text(original + "\n# edited by the test\n")
        summary = detailed_summary(code, study)
    finally:
        path.write_text(original)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    rules = workflow_rules(code)
    expected = {
        name
        for name in {row["rule"] for row in summary}
        if rules[name]["script"]
        and imports_module(
            code, (code / "workflow/rules" / rules[name]["script"]).resolve(), module
        )
    }
    inputs = {row["output_file"]: row["input-file(s)"].split(",") for row in summary}
    importing = {
        row["rule"]
        for row in summary
        if str(path) in code_inputs(study, inputs[row["output_file"]])
    }
    assert importing == expected, (sorted(importing), sorted(expected))
    assert expected, "the reference study runs jobs that import the module"
    pending = [row for row in summary if row["plan"] == "update pending"]
    assert importing <= {row["rule"] for row in pending}
    rebuilt = {row["output_file"] for row in pending}
    downstream_only = [
        row["output_file"]
        for row in pending
        if row["rule"] not in importing and not rebuilt & set(inputs[row["output_file"]])
    ]
    assert not downstream_only, f"planned with no edited code upstream: {downstream_only}"
    assert planned_rules(code, study) == set()  # restored: nothing left to do
