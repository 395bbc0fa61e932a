"""Access to the authors' released artifact: find it, or download the pinned commit, and verify.

Every file is checked against the committed checksum list, so an analysis never runs on a
missing or altered file; the error names the file.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from reallymuted.io import DataError, sha256_file, write_csv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReferenceLocation:
    directory: Path
    local: bool  # True: an existing directory; False: to be downloaded there


def read_checksums(path: str | Path) -> dict[str, str]:
    """Parse a ``sha256sum`` listing into ``{relative path: hex digest}``."""
    sums: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise DataError(f"{path}:{number}: not a sha256sum line: {line!r}")
        sums[name.removeprefix("./")] = digest
    return sums


def locate(reference_config: dict[str, Any], repo_root: str | Path) -> ReferenceLocation:
    """Where the reference data is (``dir`` if it exists) or will be downloaded to."""
    root = Path(repo_root)
    local = root / reference_config["dir"]
    if local.is_dir():
        return ReferenceLocation(local.resolve(), local=True)
    target = root / reference_config["download_dir"] / reference_config["commit"]
    return ReferenceLocation(target, local=False)


def verify(directory: str | Path, checksums: dict[str, str]) -> pd.DataFrame:
    """Check every listed file; raise :class:`DataError` naming each missing or altered one."""
    directory = Path(directory)
    rows, problems = [], []
    for name, expected in sorted(checksums.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        actual = sha256_file(path)
        if actual != expected:
            problems.append(f"{path}: sha256 {actual[:12]}… does not match {expected[:12]}…")
        rows.append({"file": name, "bytes": path.stat().st_size, "sha256": actual})
    if problems:
        raise DataError(
            "reference data failed verification against the pinned checksums:\n  "
            + "\n  ".join(problems)
        )
    return pd.DataFrame(rows)


def directory_of(files: list[str], checksums: dict[str, str]) -> Path:
    """The directory that holds ``files`` laid out as the checksum list names them."""
    for file in map(str, files):
        for name in checksums:
            if file.endswith("/" + name):
                return Path(file[: -len(name) - 1])
    raise DataError("none of the given files is a reference file listed in the checksums")


def write_verification(files: list[str], checksums_path: str | Path, out: str | Path) -> None:
    checksums = read_checksums(checksums_path)
    directory = directory_of(files, checksums)
    table = verify(directory, checksums)
    write_csv(out, table)
    log.info("verified %d reference files in %s", len(table), directory)


def file_url(template: str, repository: str, commit: str, name: str) -> str:
    return template.format(repository=repository, commit=commit, path=urllib.parse.quote(name))


def download(
    reference_config: dict[str, Any],
    checksums: dict[str, str],
    target: str | Path,
    timeout_s: float = 60.0,
) -> Path:
    """Download every listed file of the pinned commit into ``target``, verified.

    Files go to a temporary sibling directory that is renamed onto ``target`` only when all
    of them arrived and matched; on any failure nothing is left behind.
    """
    target = Path(target)
    if target.is_dir():
        verify(target, checksums)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, expected in sorted(checksums.items()):
            url = file_url(
                reference_config["url_template"],
                reference_config["repository"],
                reference_config["commit"],
                name,
            )
            dest = staging / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            log.info("downloading %s", url)
            try:
                with (
                    urllib.request.urlopen(url, timeout=timeout_s) as response,
                    dest.open("wb") as fh,
                ):
                    shutil.copyfileobj(response, fh)
            except OSError as exc:  # URLError, HTTPError and socket errors are all OSErrors
                raise DataError(f"{name}: download from {url} failed: {exc}") from exc
            actual = sha256_file(dest)
            if actual != expected:
                raise DataError(
                    f"{name}: downloaded file from {url} has sha256 {actual[:12]}…, "
                    f"expected {expected[:12]}… (corrupted or wrong commit)"
                )
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target
