"""What packing and verifying share: the archive's names, the error both raise, and how the
checkout's workflow is run."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from reallymuted import paths

TOP = "reallymuted-artifact"
MANIFEST = "MANIFEST.json"
SUMS = "SHA256SUMS"
SCHEMA = "reallymuted.artifact/1"
# Files of the checkout whose digests the manifest records (the code that made the results).
CODE_PATHS = (
    "Snakefile",
    "workflow",
    "src",
    "scripts",
    "envs",
    "config",
    "config.yaml",
    "requirements.txt",
    "pyproject.toml",
    "Makefile",
)
STIMULI = f"{paths.STIMULI}/"
# Packed, but not rebuilt by a replay: the report records run times; the stimuli are evidence
# (what the sessions played: placed as archived, see prepare_rebuild); benchmarks measure the
# machine.
NOT_REBUILT = ("results/report.html", STIMULI, "results/bench/")


class ArtifactError(RuntimeError):
    """The study cannot be packed, or an archive cannot be verified; the message says why."""


def default_repo() -> Path:
    """The checkout this module belongs to (``src/reallymuted/artifact/`` -> its root)."""
    here = Path(__file__).resolve().parents[3]
    return here if (here / "Snakefile").is_file() else Path.cwd()


def run_captured(argv: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, check=False)


def snakemake_command(repo: Path, workdir: Path, configfiles: Sequence[Path]) -> list[str]:
    """The ``snakemake`` invocation for this checkout's Snakefile in ``workdir``."""
    command = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile")]
    command += ["-d", str(workdir)]
    if configfiles:
        command += ["--configfile", *map(str, configfiles)]
    return command
