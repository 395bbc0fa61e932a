"""Artifact evaluation: pack a finished study into one archive with its provenance, and verify
an archive by rebuilding every table and figure from its raw evidence alone.

Why *replay*: a testbed session is a real-time capture, so running it again gives new evidence,
never the same bytes. Verification therefore takes the archived raw evidence as given
(``sessions.replay: true``: the capture rule is not defined and ``results/raw/`` is a plain
input of extraction) and rebuilds everything derived from it and from the authors' reference
data. The stimuli the sessions played are evidence too: the replay reads the archived WAVs,
never a new build of their specs (:func:`prepare_rebuild`). The rebuild happens in a fresh
directory that holds nothing but that evidence, so Snakemake's modification-time logic never
sees an archived output: however the times of the extracted files and of a fresh checkout
compare, every table and figure is computed again before it is compared with the archived one.

Archive (``reallymuted-artifact-<commit>.tar.gz``), one top directory ``reallymuted-artifact/``:

``MANIFEST.json``
    provenance: when and where it was packed, the git commit (and whether the tree was dirty),
    the effective configuration, tool versions (Python packages, Debian packages, programs),
    the SHA-256 of every code file of the checkout (not packed: the commit names them) and of
    every packed file with its role (``evidence``, ``output``, ``log``, ``reference``,
    ``stimulus``, ``report``, ``config``).
``SHA256SUMS``
    every packed file, for ``sha256sum -c``.
``config.yaml``
    the effective configuration (config files merged, schema defaults filled in).
``results/``
    raw evidence (``results/raw/``), every output of the workflow for this configuration, the
    stimuli, the report; ``logs/`` the jobs' logs.
``reference/``
    only with ``--with-reference``: the authors' released files the run read. They carry no
    license (see ../shared/reference/vcamutebutton-popets22/PROVENANCE.md), so by default an
    archive records their digests only and verification reads them where the study does
    (``reference.dir`` beside the checkout, or the pinned commit downloaded), checked against
    workflow/resources/reference.sha256 either way.

Comparison: every output is compared byte for byte; a PNG that differs in bytes is compared
pixel by pixel (max absolute difference per channel <= ``pixel_tolerance``, 0 by default: our
figures are deterministic, ``reallymuted.figures.save`` fixes their metadata). The report
(``results/report.html``) records run times and is not compared.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from reallymuted import debian, paths
from reallymuted.io import sha256_file

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


# --- small helpers --------------------------------------------------------------------------


def default_repo() -> Path:
    """The checkout this module belongs to (``src/reallymuted/artifact.py`` -> its root)."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "Snakefile").is_file() else Path.cwd()


def _run(argv: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, check=False)


def snakemake_command(repo: Path, workdir: Path, configfiles: Sequence[Path]) -> list[str]:
    """The ``snakemake`` invocation for this checkout's Snakefile in ``workdir``."""
    command = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile")]
    command += ["-d", str(workdir)]
    if configfiles:
        command += ["--configfile", *map(str, configfiles)]
    return command


# --- configuration --------------------------------------------------------------------------


def effective_config(repo: Path, workdir: Path, configfiles: Sequence[Path]) -> dict[str, Any]:
    """The configuration a run in ``workdir`` sees: the Snakefile's ``configfile:``
    (``config.yaml`` of the working directory), each ``--configfile`` merged over it as
    Snakemake merges them, then validated with the schema's defaults filled in (as
    ``common.smk`` does before any rule)."""
    from snakemake.utils import update_config

    from reallymuted.config import load_yaml, validate_config

    config: dict[str, Any] = {}
    base = [workdir / "config.yaml"] if (workdir / "config.yaml").is_file() else []
    for path in [*base, *configfiles]:
        update_config(config, load_yaml(path) or {})
    return validate_config(config, repo / "workflow/schemas/config.schema.yaml")


def replay_overlay(directory: Path) -> Path:
    """A config overlay switching ``sessions.replay`` on (``--config`` cannot set a nested
    boolean: Snakemake passes nested values on as strings)."""
    path = directory / "replay.yaml"
    path.write_text("sessions:\n  replay: true\n")
    return path


@dataclasses.dataclass
class OutputRow:
    """One line of ``snakemake --summary``: an output file of the workflow and its state."""

    path: str
    rule: str
    logs: list[str]
    status: str
    plan: str


def workflow_outputs(repo: Path, workdir: Path, configfiles: Sequence[Path]) -> list[OutputRow]:
    """Every output of the workflow for this configuration, in replay mode (so raw evidence is
    an input, and a stale analysis shows as pending without asking to capture again)."""
    with tempfile.TemporaryDirectory(prefix="rm-artifact-") as tmp:
        command = snakemake_command(repo, workdir, [*configfiles, replay_overlay(Path(tmp))])
        run = _run([*command, "--summary", "--nolock"])
    if run.returncode != 0:
        raise ArtifactError(f"snakemake --summary failed:\n{run.stderr[-3000:]}")
    rows = []
    lines = run.stdout.splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("output_file\t")), None)
    if header is None:
        raise ArtifactError(f"no summary table in snakemake's output:\n{run.stdout[-2000:]}")
    for line in lines[header + 1 :]:
        fields = line.split("\t")
        if len(fields) < 6:
            continue
        path, _date, rule, logs, status, plan = fields[:6]
        logs_list = [p.strip() for p in logs.split(",") if p.strip() and p.strip() != "-"]
        rows.append(OutputRow(path, rule, logs_list, status, plan))
    return rows


# --- provenance -----------------------------------------------------------------------------


def code_files(repo: Path) -> list[str]:
    """Files of the checkout that make up the workflow (tracked or new, not ignored)."""
    run = _run(["git", "ls-files", "-co", "--exclude-standard", "--", *CODE_PATHS], cwd=repo)
    if run.returncode == 0:
        names = run.stdout.splitlines()
    else:  # not a git checkout (e.g. an unpacked source tarball): every file under the paths
        names = [
            str(p.relative_to(repo))
            for top in CODE_PATHS
            for p in ([repo / top] if (repo / top).is_file() else (repo / top).rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts
        ]
    return sorted(n for n in names if (repo / n).is_file())


def code_digests(repo: Path) -> dict[str, str]:
    return {name: sha256_file(repo / name) for name in code_files(repo)}


def git_info(repo: Path) -> dict[str, Any]:
    commit = _run(["git", "rev-parse", "HEAD"], cwd=repo)
    if commit.returncode != 0:
        return {"commit": None, "dirty": None, "note": "not a git checkout"}
    status = _run(["git", "status", "--porcelain", "--", *CODE_PATHS], cwd=repo).stdout
    changed = sorted(line[3:] for line in status.splitlines() if line.strip())
    return {
        "commit": commit.stdout.strip(),
        "describe": _run(["git", "describe", "--always", "--dirty"], cwd=repo).stdout.strip(),
        "dirty": bool(changed),
        "changed": changed,
    }


def _first_line(argv: Sequence[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    run = _run(argv)
    text = (run.stdout or run.stderr).strip()
    return text.splitlines()[0] if text else None


def tool_versions(repo: Path) -> dict[str, Any]:
    """What the results were computed with: Python and its packages, Debian packages, OS."""
    from importlib import metadata

    packages = {d.metadata["Name"]: d.version for d in metadata.distributions()}
    os_release = {}
    if Path("/etc/os-release").is_file():
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            os_release[key] = value.strip('"')
    apt_names = [
        n
        for name in debian.APT_LISTS
        if (repo / name).is_file()
        for n in debian.read_package_list(repo / name)
    ]
    installed = debian.installed_versions(apt_names)
    return {
        "python": sys.version.split()[0],
        "python_packages": dict(sorted(packages.items(), key=lambda kv: kv[0].lower())),
        "debian_packages": installed,
        # what ran that is not what envs/apt.lock says (another point/security release, ...)
        "debian_drift": debian.drift(debian.package_states(repo, installed)),
        "os": os_release.get("PRETTY_NAME"),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "programs": {
            "tshark": _first_line(["tshark", "--version"]),
            "git": _first_line(["git", "--version"]),
        },
    }


# --- pack -----------------------------------------------------------------------------------


def _session_dirs(config: dict[str, Any]) -> list[str]:
    from reallymuted.paths import session_dir
    from reallymuted.study import matrix

    if not config["stages"].get("sessions"):
        return []
    return [session_dir(*key) for key in matrix(config["sessions"])]


def pack(
    repo: Path,
    workdir: Path,
    configfiles: Sequence[Path],
    out_dir: Path,
    check: bool = True,
    with_reference: bool = False,
) -> Path:
    """Pack the study of ``workdir`` into ``out_dir``; return the archive's path.

    Refuses (:class:`ArtifactError`) when an output of the workflow is missing or out of date
    with its raw evidence and the code (``check``), because such an archive would not verify.
    """
    from reallymuted import reference

    repo, workdir, out_dir = repo.resolve(), workdir.resolve(), out_dir.resolve()
    configfiles = [Path(p).resolve() for p in configfiles]
    config = effective_config(repo, workdir, configfiles)
    rows = workflow_outputs(repo, workdir, configfiles)
    stale = [r for r in rows if r.plan != "no update" or not (workdir / r.path).is_file()]
    if check and stale:
        listing = "\n  ".join(f"{r.path} ({r.rule}: {r.status}, {r.plan})" for r in stale[:20])
        raise ArtifactError(
            f"{len(stale)} output(s) are missing or out of date with the raw evidence and the "
            f"code; run the study first (`make study`, or to keep the captured sessions, "
            f"snakemake -c all --configfile ... config/replay.yaml):\n  {listing}"
        )

    files: dict[str, tuple[Path, str]] = {}  # archive path -> (source, role)
    for folder in _session_dirs(config):
        raw = workdir / folder
        if not raw.is_dir():
            raise ArtifactError(f"{raw}: raw evidence missing")
        for path in sorted(raw.rglob("*")):
            if path.is_file() and ".session" not in path.relative_to(raw).parts:
                files[str(path.relative_to(workdir))] = (path, "evidence")
    for row in rows:
        if (workdir / row.path).is_file():
            files[row.path] = (workdir / row.path, "output")
        for log in row.logs:
            if (workdir / log).is_file():
                files[log] = (workdir / log, "log")
    for name in sorted((workdir / paths.STIMULI).glob("*.wav")):
        files[str(name.relative_to(workdir))] = (name, "stimulus")
    if (workdir / "results/report.html").is_file():
        files["results/report.html"] = (workdir / "results/report.html", "report")

    location = reference.locate(config["reference"], repo)
    pinned = reference.read_checksums(repo / "workflow/resources/reference.sha256")
    for name, digest in sorted(pinned.items()):
        source = location.directory / name
        if not source.is_file() or sha256_file(source) != digest:
            raise ArtifactError(f"reference file {source} is missing or fails its checksum")
        if with_reference:
            files[f"reference/{name}"] = (source, "reference")

    git = git_info(repo)
    stamp = (git["commit"] or "nogit")[:12] + ("-dirty" if git.get("dirty") else "")
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / f"{TOP}-{stamp}.tar.gz"
    with tempfile.TemporaryDirectory(prefix="rm-artifact-") as tmp:
        staging = Path(tmp)
        config_path = staging / "config.yaml"
        config_path.write_text(
            "# Effective configuration of the packed study (config files merged, defaults filled)\n"
            + yaml.safe_dump(config, sort_keys=False)
        )
        files["config.yaml"] = (config_path, "config")
        entries = {
            name: {"sha256": sha256_file(src), "bytes": src.stat().st_size, "role": role}
            for name, (src, role) in sorted(files.items())
        }
        manifest = {
            "schema": SCHEMA,
            "packed_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "host": platform.node(),
            "git": git,
            "configfiles": {
                str(p): sha256_file(p)
                for p in ([workdir / "config.yaml"] if (workdir / "config.yaml").is_file() else [])
                + list(configfiles)
            },
            "config": config,
            "reference": {
                "repository": config["reference"]["repository"],
                "commit": config["reference"]["commit"],
                "packed": with_reference,
                "sha256": pinned,
            },
            "sessions": _session_dirs(config),
            "tools": tool_versions(repo),
            "code": code_digests(repo),
            "excluded": _unpacked(workdir, files),
            "files": entries,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
        sums = {
            **{n: e["sha256"] for n, e in entries.items()},
            MANIFEST: sha256_file(staging / MANIFEST),
        }
        (staging / SUMS).write_text("".join(f"{d}  {n}\n" for n, d in sorted(sums.items())))
        partial = archive.with_name(archive.name + ".part")
        with tarfile.open(partial, "w:gz") as tar:
            for name in (MANIFEST, SUMS):
                tar.add(staging / name, arcname=f"{TOP}/{name}")
            for name, (src, _role) in sorted(files.items()):
                tar.add(src, arcname=f"{TOP}/{name}")
        partial.replace(archive)
    return archive


def _unpacked(workdir: Path, files: dict[str, tuple[Path, str]]) -> list[str]:
    """Files under results/ left out: not made by this configuration (e.g. a former run's)."""
    results = workdir / "results"
    if not results.is_dir():
        return []
    left = []
    for path in sorted(results.rglob("*")):
        name = str(path.relative_to(workdir))
        if (
            path.is_file()
            and name not in files
            and name != "results/README.md"
            and "/.session/" not in name
        ):
            left.append(name)
    return left


# --- compare --------------------------------------------------------------------------------


@dataclasses.dataclass
class Comparison:
    """How one rebuilt file compares with its archived version."""

    path: str
    status: str  # identical | pixels-within-tolerance | differs | missing
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("identical", "pixels-within-tolerance")


def compare_png(expected: Path, actual: Path, tolerance: int) -> Comparison:
    """Pixel comparison of two PNGs: the largest per-channel difference, the pixels that differ."""
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(expected).convert("RGBA"), dtype=np.int16)
    b = np.asarray(Image.open(actual).convert("RGBA"), dtype=np.int16)
    name = str(actual)
    if a.shape != b.shape:
        return Comparison(
            name, "differs", f"size {a.shape[1]}x{a.shape[0]} -> {b.shape[1]}x{b.shape[0]}"
        )
    diff = np.abs(a - b).max(axis=2)
    worst, count = int(diff.max()), int((diff > 0).sum())
    detail = f"max channel difference {worst}/255 in {count} of {diff.size} pixels"
    if worst == 0:
        return Comparison(name, "pixels-within-tolerance", "same pixels, different bytes")
    return Comparison(name, "pixels-within-tolerance" if worst <= tolerance else "differs", detail)


def compare_file(expected: Path, actual: Path, tolerance: int = 0) -> Comparison:
    """Byte comparison; PNGs that differ in bytes get a pixel comparison."""
    if not actual.is_file():
        return Comparison(str(actual), "missing", "not rebuilt")
    if expected.read_bytes() == actual.read_bytes():
        return Comparison(str(actual), "identical")
    if expected.suffix == ".png":
        return compare_png(expected, actual, tolerance)
    size = f"{expected.stat().st_size} -> {actual.stat().st_size} bytes"
    if expected.suffix in (".csv", ".md", ".json", ".jsonl", ".tsv", ".txt"):
        old = expected.read_text(errors="replace").splitlines()
        new = actual.read_text(errors="replace").splitlines()
        first = next(
            (i for i, (x, y) in enumerate(zip(old, new, strict=False)) if x != y),
            min(len(old), len(new)),
        )
        return Comparison(str(actual), "differs", f"{size}; first different line {first + 1}")
    return Comparison(str(actual), "differs", size)


def compare_trees(
    expected_root: Path, actual_root: Path, names: Iterable[str], tolerance: int = 0
) -> list[Comparison]:
    """Compare each relative path under two roots; paths in the result are relative."""
    out = []
    for name in sorted(names):
        result = compare_file(expected_root / name, actual_root / name, tolerance)
        out.append(dataclasses.replace(result, path=name))
    return out


# --- verify ---------------------------------------------------------------------------------


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


# --- command line ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reallymuted.artifact",
        description="Pack a study for artifact evaluation, or verify an archive by replay.",
    )
    parser.add_argument("--repo", type=Path, default=None, help="the checkout (default: this one)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="pack results/ with raw evidence and provenance")
    p.add_argument("--workdir", type=Path, default=Path.cwd(), help="where the study ran")
    p.add_argument("--configfile", type=Path, nargs="*", default=[], help="as given to snakemake")
    p.add_argument("--out", type=Path, default=Path("dist"), help="directory of the archive")
    p.add_argument("--no-check", action="store_true", help="pack even if outputs are stale")
    p.add_argument(
        "--with-reference",
        action="store_true",
        help="also pack the authors' released data (unlicensed: for private archives only)",
    )
    v = sub.add_parser("verify", help="rebuild every output from an archive's raw evidence")
    v.add_argument("archive", type=Path)
    v.add_argument("--workdir", type=Path, default=None, help="default: a new temporary dir")
    v.add_argument("--cores", default="all")
    v.add_argument("--pixel-tolerance", type=int, default=0, help="0-255, PNG only (default 0)")
    args = parser.parse_args(argv)
    repo = (args.repo or default_repo()).resolve()
    try:
        if args.command == "pack":
            archive = pack(
                repo,
                args.workdir,
                args.configfile,
                args.out,
                check=not args.no_check,
                with_reference=args.with_reference,
            )
            size = archive.stat().st_size / 1e6
            print(f"artifact: {archive} ({size:.1f} MB)")
            print(f"verify it with: make verify-artifact ARCHIVE={archive}")
            return 0
        if args.command == "verify":
            result = verify(args.archive, repo, args.workdir, args.cores, args.pixel_tolerance)
            text = result.summary()
            Path(result.workdir, "verify-report.md").write_text(text)
            print(text, end="")
            print(f"(report: {Path(result.workdir, 'verify-report.md')})")
            return 0 if result.ok else 1
    except ArtifactError as exc:
        print(f"artifact: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
