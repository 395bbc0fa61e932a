"""Packing a finished study: its outputs, raw evidence, logs and stimuli, with a manifest of
their provenance (configuration, code digests, tool versions)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import platform
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from reallymuted import debian, paths
from reallymuted.artifact.common import (
    CODE_PATHS,
    MANIFEST,
    SCHEMA,
    SUMS,
    TOP,
    ArtifactError,
    run_captured,
    snakemake_command,
)
from reallymuted.io import sha256_file

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
        run = run_captured([*command, "--summary", "--nolock"])
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
    run = run_captured(
        ["git", "ls-files", "-co", "--exclude-standard", "--", *CODE_PATHS], cwd=repo
    )
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
    commit = run_captured(["git", "rev-parse", "HEAD"], cwd=repo)
    if commit.returncode != 0:
        return {"commit": None, "dirty": None, "note": "not a git checkout"}
    status = run_captured(["git", "status", "--porcelain", "--", *CODE_PATHS], cwd=repo).stdout
    changed = sorted(line[3:] for line in status.splitlines() if line.strip())
    return {
        "commit": commit.stdout.strip(),
        "describe": run_captured(
            ["git", "describe", "--always", "--dirty"], cwd=repo
        ).stdout.strip(),
        "dirty": bool(changed),
        "changed": changed,
    }


def _first_line(argv: Sequence[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    run = run_captured(argv)
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
