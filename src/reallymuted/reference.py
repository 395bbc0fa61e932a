"""Access to the authors' released artifact: find it, or download the pinned commit, and verify.

Every file is checked against the committed checksum list, so an analysis never runs on a
missing or altered file; the error names the file.
"""

from __future__ import annotations

import http.client
import logging
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reallymuted.io import DataError, atomic_path, sha256_file

if TYPE_CHECKING:
    import pandas as pd

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


VERIFIED_COLUMNS = ("file", "bytes", "sha256")


def verify(directory: str | Path, checksums: dict[str, str]) -> pd.DataFrame:
    """Check every listed file; raise :class:`DataError` naming each missing or altered one."""
    import pandas as pd

    return pd.DataFrame(verified_rows(directory, checksums))


def verified_rows(directory: str | Path, checksums: dict[str, str]) -> list[dict[str, Any]]:
    """:func:`verify`'s rows (file, bytes, sha256), without pandas."""
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
    return rows


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
    rows = verified_rows(directory, checksums)
    # The bytes write_csv writes for this table when no field needs quoting (the released
    # names do not): the reference part's first job starts without importing pandas (0.4 s)
    lines = [list(VERIFIED_COLUMNS)] + [[str(r[c]) for c in VERIFIED_COLUMNS] for r in rows]
    if any(c in field for line in lines for field in line for c in ',"\r\n'):
        import pandas as pd

        from reallymuted.io import write_csv

        write_csv(out, pd.DataFrame(rows))
    else:
        with atomic_path(out) as tmp:
            tmp.write_text("".join(",".join(line) + "\n" for line in lines))
    log.info("verified %d reference files in %s", len(rows), directory)


class DownloadError(DataError):
    """A file of the pinned commit could not be fetched; the message names its URL and why."""


def file_url(template: str, repository: str, commit: str, name: str) -> str:
    return template.format(repository=repository, commit=commit, path=urllib.parse.quote(name))


def _reason(exc: BaseException) -> str:
    """Why a request failed, in the words a user can act on (status, refusal, timeout...)."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        # the socket error behind it: "[Errno 111] Connection refused", a DNS failure, ...
        return str(exc.reason)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def fetch(url: str, dest: Path, timeout_s: float) -> None:
    """Copy ``url`` to ``dest``; raise :class:`DownloadError` naming the URL and the reason."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, dest.open("wb") as fh:
            shutil.copyfileobj(response, fh)
    # URLError, HTTPError, timeouts and socket errors are OSErrors; a connection cut mid-body
    # is http.client.IncompleteRead, which is not
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"download failed: {url}: {_reason(exc)}") from exc


def download(
    reference_config: dict[str, Any],
    checksums: dict[str, str],
    target: str | Path,
    timeout_s: float = 60.0,
) -> Path:
    """Download every listed file of the pinned commit and place it in ``target``, verified.

    ``target`` may already exist, empty or not: Snakemake creates the folders of a job's
    outputs before it runs the job, and runs it only when some output is missing, so an
    existing folder says nothing about the files. Every file is therefore fetched into a
    staging directory beside ``target`` and checked; only when all arrived and matched are they
    moved into place, each by a rename on the same file system. On any failure before that
    none is placed, and the staging directory is always removed: no file is ever half in place.
    Raises :class:`DownloadError` (URL and reason) when a file cannot be fetched, and
    :class:`DataError` naming every file whose checksum does not match.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # beside target, so on the same file system: moving a file into place is an atomic rename
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.download-", dir=target.parent))
    names = sorted(checksums)
    try:
        mismatches: list[str] = []
        for number, name in enumerate(names, 1):
            url = file_url(
                reference_config["url_template"],
                reference_config["repository"],
                reference_config["commit"],
                name,
            )
            dest = staging / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            log.info("downloading %d/%d %s", number, len(names), url)
            try:
                fetch(url, dest, timeout_s)
            except DownloadError as exc:
                message = (
                    f"reference {exc}; nothing was placed in {target} (without network access, "
                    "put a copy of the released files where config reference.dir points)"
                )
                log.error("%s", message)
                raise DownloadError(message) from exc
            actual = sha256_file(dest)
            if actual != checksums[name]:
                # keep going: the whole list tells a corrupted file from a wrong commit
                mismatches.append(
                    f"{name}: downloaded file from {url} has sha256 {actual[:12]}…, "
                    f"expected {checksums[name][:12]}… (corrupted or wrong commit)"
                )
                log.error("%s", mismatches[-1])
        if mismatches:
            raise DataError(
                f"reference download rejected, nothing was placed in {target}: "
                f"{len(mismatches)} of {len(names)} files fail the pinned checksums:\n  "
                + "\n  ".join(mismatches)
            )
        for name in names:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).replace(target / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("placed %d verified files in %s", len(names), target)
    return target
