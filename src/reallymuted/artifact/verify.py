"""Verifying an archive: its checksums, then every output rebuilt from its raw evidence alone
(replay) and compared with the archived one."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from reallymuted import debian, paths
from reallymuted.artifact.common import (
    MANIFEST,
    NOT_REBUILT,
    STIMULI,
    SUMS,
    TOP,
    ArtifactError,
    snakemake_command,
)
from reallymuted.artifact.compare import Comparison, compare_trees
from reallymuted.artifact.pack import code_digests, git_info
from reallymuted.io import sha256_file


@dataclasses.dataclass
class Verification:
    """The outcome of :func:`verify`; ``ok`` when the archive is intact and every output was
    rebuilt identical (PNG: within the pixel tolerance)."""

    archive: str
    workdir: str
    integrity: list[str]
    comparisons: list[Comparison]
    code_changes: list[str]
    extra: list[str]
    git_archive: dict[str, Any]
    git_checkout: dict[str, Any]
    snakemake_ok: bool
    snakemake_tail: str
    seconds: float
    pixel_tolerance: int
    stimuli: int = 0  # archived stimuli placed for the replay
    stimulus_problems: list[str] = dataclasses.field(default_factory=list)
    versions: list[str] = dataclasses.field(default_factory=list)  # reported, never a verdict

    @property
    def ok(self) -> bool:
        return (
            not self.integrity
            and self.snakemake_ok
            and not self.stimulus_problems
            and bool(self.comparisons)
            and all(c.ok for c in self.comparisons)
        )

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for c in self.comparisons:
            counts[c.status] = counts.get(c.status, 0) + 1
        lines = [
            f"# Verification of {self.archive}",
            "",
            f"verdict: {'REPRODUCED' if self.ok else 'NOT REPRODUCED'}",
            f"rebuilt in: {self.workdir}/rebuild ({self.seconds:.0f} s)",
            f"archive made at commit {_describe(self.git_archive)}; "
            f"this checkout {_describe(self.git_checkout)}",
            f"outputs compared: {len(self.comparisons)} ("
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            + f"); PNG pixel tolerance {self.pixel_tolerance}/255",
            f"stimuli: {self.stimuli} archived, replayed as archived"
            + (f" except {len(self.stimulus_problems)}" if self.stimulus_problems else ""),
        ]
        if self.integrity:
            lines += ["", "## Archive integrity problems", *[f"- {p}" for p in self.integrity]]
        if self.stimulus_problems:
            lines += [
                "",
                "## Stimuli the rebuild did not take from the archive",
                *[f"- {p}" for p in self.stimulus_problems],
            ]
        if self.versions:
            lines += [
                "",
                "## Versions (reported; the verdict rests on the outputs)",
                *self.versions,
            ]
        if not self.snakemake_ok:
            lines += ["", "## The rebuild failed", "```", self.snakemake_tail, "```"]
        bad = [c for c in self.comparisons if not c.ok]
        if bad:
            lines += [
                "",
                "## Outputs that differ",
                *[f"- {c.path}: {c.status} {c.detail}" for c in bad],
            ]
        within = [c for c in self.comparisons if c.status == "pixels-within-tolerance"]
        if within:
            lines += [
                "",
                "## PNGs whose bytes differ but pixels are within the tolerance",
                *[f"- {c.path}: {c.detail}" for c in within],
            ]
        if self.extra:
            lines += [
                "",
                f"## Made by this checkout, not in the archive ({len(self.extra)}; not compared)",
                *[f"- {name}" for name in self.extra],
            ]
        if self.code_changes:
            lines += [
                "",
                f"## Code differs from the archive's in {len(self.code_changes)} file(s)",
                *[f"- {c}" for c in self.code_changes],
            ]
        return "\n".join(lines) + "\n"


def _describe(git: dict[str, Any]) -> str:
    return str(git.get("describe") or git.get("commit") or "unknown")


def extract(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` into ``dest``, refusing members that would land outside it, links and
    device files. Python's own ``filter="data"`` does this from 3.11.4; Debian 12's Python is
    3.11.2, so the same checks are made here where the filter is missing."""
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
            return
        root = dest.resolve()
        for member in tar.getmembers():
            target = (dest / member.name).resolve()
            if not (member.isfile() or member.isdir()) or not target.is_relative_to(root):
                raise ArtifactError(f"{archive}: refusing member {member.name!r}")
        tar.extractall(dest)


def versions_report(manifest: dict[str, Any], repo: Path) -> list[str]:
    """How the Debian packages the study ran with compare with ``envs/apt.lock``, and how this
    machine's compare with the study's: a newer security build is a fact to report, not a
    reason to distrust identical outputs (reallymuted.debian says why)."""
    archived = manifest.get("tools", {}).get("debian_packages") or {}
    if not archived:
        return ["- the archive records no Debian packages"]
    first, *details = debian.report(debian.package_states(repo, archived), where="the study's")
    lines = [f"- {first}", *[f"  - {line.strip()}" for line in details]]
    used = {name: version for name, version in archived.items() if version}
    here = debian.installed_versions(used)
    changed = [
        f"  - {name}: {version} in the study, {here[name] or 'not installed'} here"
        for name, version in used.items()
        if here[name] != version
    ]
    lines.append(
        f"- this machine vs the study: {len(used) - len(changed)} of the {len(used)} packages "
        "the study had installed at the study's version"
    )
    return lines + changed


def check_integrity(root: Path) -> list[str]:
    """Every file listed in SHA256SUMS is there with its digest, and nothing else is."""
    sums_path = root / SUMS
    if not sums_path.is_file():
        return [f"{SUMS} missing"]
    problems, listed = [], set()
    for line in sums_path.read_text().splitlines():
        digest, _, name = line.partition("  ")
        listed.add(name)
        path = root / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{name}: sha256 differs from {SUMS}")
    for path in root.rglob("*"):
        name = str(path.relative_to(root))
        if path.is_file() and name not in listed and name != SUMS:
            problems.append(f"{name}: not listed in {SUMS}")
    return problems


def _compared(manifest: dict[str, Any]) -> list[str]:
    return sorted(
        name
        for name, entry in manifest["files"].items()
        if entry["role"] == "output" and not name.startswith(NOT_REBUILT)
    )


def _extra(rebuild: Path, manifest: dict[str, Any]) -> list[str]:
    """Outputs the rebuild made that the archive does not have (e.g. from newer code)."""
    return sorted(
        name
        for path in (rebuild / "results").rglob("*")
        if path.is_file()
        and not (name := str(path.relative_to(rebuild))).startswith(f"{paths.RAW}/")
        and name not in manifest["files"]
    )


@dataclasses.dataclass(frozen=True)
class PlacedStimulus:
    """An archived stimulus as placed in the rebuild directory (to tell if a job rewrote it)."""

    path: str
    sha256: str
    mtime_ns: int


def prepare_rebuild(root: Path, manifest: dict[str, Any], rebuild: Path) -> list[PlacedStimulus]:
    """Make ``rebuild`` hold the archive's evidence and configuration and nothing else: the raw
    evidence of every session, the stimuli the sessions played, and ``config.yaml`` with
    ``sessions.replay`` on. Returns the placed stimuli.

    A stimulus is evidence like the raw files: the analyses (the attack's input levels check
    its sha256 against the session's manifest) must read the bytes that were played, not a new
    build of the spec. Under ``sessions.replay`` the workflow has no rule that makes a stimulus
    (workflow/rules/sessions.smk), so the placed file is the only one it can read;
    :func:`stimulus_problems` checks afterwards that it was not replaced.
    """
    if rebuild.exists():
        shutil.rmtree(rebuild)
    (rebuild / "results").mkdir(parents=True)
    if (root / paths.RAW).is_dir():
        shutil.copytree(root / paths.RAW, rebuild / paths.RAW)
    placed = []
    for name, entry in sorted(manifest["files"].items()):
        if entry["role"] != "stimulus":
            continue
        target = rebuild / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / name, target)
        placed.append(PlacedStimulus(name, entry["sha256"], target.stat().st_mtime_ns))
    config = manifest["config"]
    config["sessions"]["replay"] = True
    if (root / "reference").is_dir():  # else where the study reads it, relative to the checkout
        config["reference"]["dir"] = str(root / "reference")
    (rebuild / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return placed


def stimulus_problems(rebuild: Path, placed: Sequence[PlacedStimulus]) -> list[str]:
    """Stimuli the rebuild did not take from the archive: an archived one rewritten (or gone),
    or one the archive lacks that a job made."""
    problems = []
    for stimulus in placed:
        path = rebuild / stimulus.path
        if not path.is_file():
            problems.append(f"{stimulus.path}: removed by the rebuild")
        elif path.stat().st_mtime_ns != stimulus.mtime_ns or sha256_file(path) != stimulus.sha256:
            problems.append(f"{stimulus.path}: made again by the rebuild, not the archived one")
    known = {s.path for s in placed}
    folder = rebuild / STIMULI
    made = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    for path in made:
        name = str(path.relative_to(rebuild))
        if name not in known:
            problems.append(f"{name}: not in the archive; made by the rebuild")
    return problems


def _rebuild(
    root: Path, manifest: dict[str, Any], repo: Path, rebuild: Path, workdir: Path, cores: str
) -> tuple[bool, str, list[PlacedStimulus]]:
    """Run the workflow in ``rebuild``, which holds the evidence and the configuration and
    nothing else (:func:`prepare_rebuild`), so every output is computed again. Returns
    (success, end of the log, the placed stimuli)."""
    placed = prepare_rebuild(root, manifest, rebuild)
    command = snakemake_command(repo, rebuild, [rebuild / "config.yaml"])
    command += ["--workflow-profile", str(repo / "workflow/profiles/default")]
    command += ["--cores", str(cores)]
    log_path = workdir / "rebuild.log"
    with log_path.open("w") as log:
        run = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    return run.returncode == 0, "\n".join(log_path.read_text().splitlines()[-40:]), placed


def verify(
    archive: Path,
    repo: Path,
    workdir: Path | None = None,
    cores: str = "all",
    pixel_tolerance: int = 0,
) -> Verification:
    """Unpack ``archive``, check it, rebuild every output from its raw evidence and reference
    data with this checkout's workflow (replay: nothing is captured), and compare."""
    import time

    start = time.monotonic()
    repo = repo.resolve()
    workdir = Path(workdir or tempfile.mkdtemp(prefix="reallymuted-verify-")).resolve()
    unpacked = workdir / "archive"
    if unpacked.exists():
        shutil.rmtree(unpacked)
    unpacked.mkdir(parents=True)
    extract(archive, unpacked)
    root = unpacked / TOP
    if not (root / MANIFEST).is_file():
        raise ArtifactError(f"{archive}: no {TOP}/{MANIFEST} inside; not a reallymuted artifact")
    manifest = json.loads((root / MANIFEST).read_text())
    integrity = check_integrity(root)
    rebuild = workdir / "rebuild"
    placed: list[PlacedStimulus] = []
    problems: list[str] = []
    if integrity:  # a corrupted archive is not evidence: rebuilding from it proves nothing
        snakemake_ok, tail, comparisons = False, "not run: the archive failed its checksums", []
    else:
        snakemake_ok, tail, placed = _rebuild(root, manifest, repo, rebuild, workdir, cores)
        comparisons = compare_trees(root, rebuild, _compared(manifest), pixel_tolerance)
        problems = stimulus_problems(rebuild, placed)
    current = code_digests(repo)
    archived = manifest.get("code", {})
    code_changes = sorted(
        [f"{n}: changed" for n in current.keys() & archived.keys() if current[n] != archived[n]]
        + [f"{n}: new in this checkout" for n in current.keys() - archived.keys()]
        + [f"{n}: not in this checkout" for n in archived.keys() - current.keys()]
    )
    return Verification(
        archive=str(archive),
        workdir=str(workdir),
        integrity=integrity,
        comparisons=comparisons,
        code_changes=code_changes,
        extra=_extra(rebuild, manifest) if comparisons else [],
        git_archive=manifest.get("git", {}),
        git_checkout=git_info(repo),
        snakemake_ok=snakemake_ok,
        snakemake_tail=tail,
        seconds=time.monotonic() - start,
        pixel_tolerance=pixel_tolerance,
        stimuli=len(placed),
        stimulus_problems=problems,
        versions=versions_report(manifest, repo),
    )
