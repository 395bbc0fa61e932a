"""The Debian packages the study runs with: what the lock says, what is installed, how they differ.

What the study promises about versions. ``envs/apt.txt`` and ``envs/apt-cluster.txt`` name the
packages (names only, so ``make setup`` works on any Debian 12 mirror); ``envs/apt.lock`` keeps
the version of each that the study was made with. Debian replaces some builds in place through
point and security releases (Chromium every few weeks) and the old build leaves the mirror, so
an exact pin would fail for every newcomer soon after it was written. Therefore:

- a package of ``envs/apt.txt`` that is not installed, or one installed at a different *major*
  version (epoch and first upstream number: Chromium 156 -> 157, tshark 4 -> 5), fails
  ``make test``: the study would run other software than it was made with;
- the same major at another Debian revision or point release (Chromium 156.0.8078.79 ->
  156.0.8078.114) is *drift*: reported by ``make setup``, recorded in the artifact's manifest
  beside the installed set, shown by ``make verify-artifact``, and never a failure;
- what actually ran is recorded where it ran: every session manifest carries the versions of
  its programs, and the artifact's manifest the installed version of every listed package.

``python -m reallymuted.debian check`` prints the comparison (``make setup`` runs it);
``python -m reallymuted.debian lock`` prints a new lock for this machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

SETUP_LIST = "envs/apt.txt"  # installed by `make setup`: required
CLUSTER_LIST = "envs/apt-cluster.txt"  # installed by scripts/slurm-cluster.sh on first use
APT_LISTS = (SETUP_LIST, CLUSTER_LIST)
LOCK = "envs/apt.lock"
LOCK_HEADER = (
    "# Debian 12 package versions the study was made with: every package of envs/apt.txt and",
    "# envs/apt-cluster.txt as installed by `make setup` / scripts/slurm-cluster.sh.",
    "# tests/test_envs.py fails on a missing package or another major version; another point or",
    "# security release of the same major is reported, not a failure (reallymuted/debian.py).",
    "# After a deliberate upgrade, regenerate with",
    "#   .venv/bin/python -m reallymuted.debian lock > envs/apt.lock",
)

# Status of one package, installed against locked.
SAME, NEWER, OLDER, MAJOR, MISSING = "same", "newer", "older", "major", "missing"


def read_package_list(path: str | Path) -> list[str]:
    """Package names of an apt list (first word of each line, ``#`` starts a comment)."""
    names = []
    for line in Path(path).read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            names.append(words[0].split("=", 1)[0])
    return names


def read_lock(path: str | Path) -> dict[str, str]:
    """``{package: version}`` of a lock file (``name=version`` lines)."""
    lock = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("=")
        if not sep or not name or not version:
            raise ValueError(f"{path}:{number}: {line!r} is not name=version")
        lock[name] = version
    return lock


def installed_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each Debian package (None when absent or dpkg is missing)."""
    names = list(names)
    if shutil.which("dpkg-query") is None:
        return dict.fromkeys(names)
    versions: dict[str, str | None] = {}
    for name in names:
        run = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}\t${Version}", name],
            capture_output=True,
            text=True,
            check=False,
        )
        status, _, version = run.stdout.partition("\t")
        versions[name] = version if run.returncode == 0 and "ok installed" in status else None
    return versions


def major(version: str) -> str:
    """Epoch and first number of the upstream version: ``1:2.3-4`` -> ``1:2``, ``156.0.1-1``
    -> ``156``. A Debian point or security release keeps it; a new upstream series does not."""
    epoch, _, rest = version.rpartition(":")
    upstream = rest.rsplit("-", 1)[0] if "-" in rest else rest
    first = re.match(r"\d+", upstream)
    return f"{epoch + ':' if epoch else ''}{first.group(0) if first else upstream}"


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian orders ``a`` and ``b`` (dpkg's own comparison)."""
    for result, relation in ((0, "eq"), (-1, "lt")):
        holds = subprocess.run(["dpkg", "--compare-versions", a, relation, b], check=False)
        if holds.returncode == 0:
            return result
    return 1


@dataclasses.dataclass(frozen=True)
class PackageState:
    name: str
    locked: str
    installed: str | None
    required: bool  # listed in envs/apt.txt: `make setup` installs it

    @property
    def status(self) -> str:
        if self.installed is None:
            return MISSING
        if self.installed == self.locked:
            return SAME
        if major(self.installed) != major(self.locked):
            return MAJOR
        return NEWER if compare_versions(self.installed, self.locked) > 0 else OLDER

    @property
    def fails(self) -> bool:
        """Another major version fails wherever installed; absence only for `make setup`'s."""
        return self.status == MAJOR or (self.status == MISSING and self.required)

    def describe(self) -> str:
        if self.status == MISSING:
            return f"{self.name}: not installed (locked {self.locked})"
        if self.status == SAME:
            return f"{self.name} {self.locked}"
        kind = {
            NEWER: "newer point/security release",
            OLDER: "older build",
            MAJOR: "another major version",
        }[self.status]
        return f"{self.name}: {kind}, installed {self.installed}, locked {self.locked}"


def package_states(
    repo: Path, installed: Mapping[str, str | None] | None = None
) -> list[PackageState]:
    """Every locked package against ``installed`` (default: this machine's dpkg)."""
    lock = read_lock(repo / LOCK)
    required = set(read_package_list(repo / SETUP_LIST))
    if installed is None:
        installed = installed_versions(lock)
    return [
        PackageState(name, version, installed.get(name), name in required)
        for name, version in lock.items()
    ]


def drift(states: Sequence[PackageState]) -> list[dict[str, str | None]]:
    """The packages not at their locked version, for a manifest."""
    return [
        {
            "package": s.name,
            "locked": s.locked,
            "installed": s.installed,
            "status": s.status,
        }
        for s in states
        if s.status != SAME
    ]


def report(states: Sequence[PackageState], where: str = "installed") -> list[str]:
    """Lines for a person: a count of packages as locked, then each that is not."""
    same = sum(s.status == SAME for s in states)
    lines = [f"Debian packages ({where} vs {LOCK}): {same} of {len(states)} as locked"]
    for state in states:
        if state.status == SAME or (state.status == MISSING and not state.required):
            continue
        mark = "FAIL" if state.fails else "note"
        lines.append(f"  {mark}: {state.describe()}")
    optional = [s.name for s in states if s.status == MISSING and not s.required]
    if optional:
        lines.append(f"  not installed (the cluster test installs them): {', '.join(optional)}")
    return lines


def lock_text(repo: Path) -> str:
    """A new ``envs/apt.lock``: this machine's version of every listed package."""
    lines = list(LOCK_HEADER)
    for list_name in APT_LISTS:
        for name, version in installed_versions(read_package_list(repo / list_name)).items():
            if version is None:
                raise ValueError(f"{name} ({list_name}) is not installed: nothing to lock")
            lines.append(f"{name}={version}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reallymuted.debian", description=__doc__)
    parser.add_argument("command", choices=["check", "lock"])
    parser.add_argument("--repo", type=Path, default=Path.cwd())
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when a package is missing or at another major version",
    )
    args = parser.parse_args(argv)
    if args.command == "lock":
        sys.stdout.write(lock_text(args.repo))
        return 0
    states = package_states(args.repo)
    print("\n".join(report(states)))
    if any(s.fails for s in states):
        print("  the study was made with other versions: `make test` will fail (see above)")
        return 1 if args.strict else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
