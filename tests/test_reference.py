"""Reference data: verification against the pinned checksums, and the download path.

The download is exercised for real over HTTP, from a server on loopback that serves a copy of
the released files laid out like the authors' repository (the URL template's
``{repository}/{commit}/{path}``), both by calling the function and by running the workflow's
reference rules the way a clone without ../shared does.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from reallymuted import reference
from reallymuted.io import DataError

REPOSITORY = "wi-pi/VCAMuteButton_PoPETS"
COMMIT = "ae4a55e7011d65403c1559c268e362e7dfc2d352"
TEMPLATE = "/{repository}/{commit}/{path}"  # after the server's base URL, as on GitHub


@pytest.fixture(scope="module")
def checksums(repo_root: Path) -> dict[str, str]:
    return reference.read_checksums(repo_root / "workflow/resources/reference.sha256")


def test_committed_checksums_match_the_shared_copy(reference_dir: Path, checksums: dict) -> None:
    assert checksums == reference.read_checksums(reference_dir / "SHA256SUMS")


def test_shared_reference_verifies(reference_dir: Path, checksums: dict) -> None:
    table = reference.verify(reference_dir, checksums)
    assert len(table) == len(checksums) == 25


def test_verification_file_is_write_csvs_table_byte_for_byte(
    reference_dir: Path, repo_root: Path, checksums: dict, tmp_path: Path
) -> None:
    """write_verification writes the CSV without pandas; the bytes are write_csv's of the
    verify table, for the released names and for a name that needs quoting."""
    from reallymuted.io import write_csv

    files = [str(reference_dir / name) for name in checksums]
    listing = repo_root / "workflow/resources/reference.sha256"
    reference.write_verification(files, listing, tmp_path / "ours.csv")
    write_csv(tmp_path / "theirs.csv", reference.verify(reference_dir, checksums))
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "theirs.csv").read_bytes()

    odd = tmp_path / "odd"
    (odd / "a,b").mkdir(parents=True)
    (odd / "a,b" / 'say "hi".txt').write_text("hi\n")
    (odd / "plain.txt").write_text("plain\n")
    sums = {name: reference.sha256_file(odd / name) for name in ('a,b/say "hi".txt', "plain.txt")}
    (tmp_path / "odd.sha256").write_text("".join(f"{d}  {n}\n" for n, d in sums.items()))
    reference.write_verification([str(odd / "plain.txt")], tmp_path / "odd.sha256", tmp_path / "o")
    write_csv(tmp_path / "t", reference.verify(odd, sums))
    assert (tmp_path / "o").read_bytes() == (tmp_path / "t").read_bytes()
    assert b'"a,b/say ""hi"".txt"' in (tmp_path / "o").read_bytes()


def test_corrupted_and_missing_files_are_named(
    reference_dir: Path, checksums: dict, tmp_path: Path
) -> None:
    copy = tmp_path / "ref"
    shutil.copytree(reference_dir, copy)
    (copy / "UserStudy/webex-dump.json").write_text("{}")
    (copy / "BgActivityClassifier/ParseSourceData/old_data_100cm.txt").unlink()
    with pytest.raises(DataError) as caught:
        reference.verify(copy, checksums)
    message = str(caught.value)
    assert "webex-dump.json: sha256" in message
    assert "old_data_100cm.txt: missing" in message


def test_locate_prefers_the_local_directory(repo_root: Path, reference_dir: Path) -> None:
    config = {"dir": str(reference_dir), "download_dir": "resources/reference", "commit": "c" * 40}
    assert reference.locate(config, repo_root) == reference.ReferenceLocation(reference_dir, True)
    config["dir"] = "no/such/dir"
    where = reference.locate(config, repo_root)
    assert not where.local and where.directory == repo_root / "resources/reference" / ("c" * 40)


# --- the download, served from loopback ---------------------------------------------------


@pytest.fixture
def pinned_files(repo_root: Path) -> Path:
    """The released files, the only offline source of what the download must deliver."""
    source = (repo_root / "../shared/reference/vcamutebutton-popets22").resolve()
    if not (source / "SHA256SUMS").is_file():
        pytest.skip(f"no copy of the pinned reference files to serve: {source} is absent")
    return source


@contextlib.contextmanager
def http_server(root: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving ``root``; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # keep test output quiet
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def served(pinned_files: Path, checksums: dict, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder of the served files): the pinned files where TEMPLATE finds them."""
    root = tmp_path / "served"
    files = root / REPOSITORY / COMMIT
    for name in checksums:
        (files / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pinned_files / name, files / name)
    with http_server(root) as base_url:
        yield base_url, files


def closed_port() -> int:
    """A loopback port nothing listens on (just released), so a connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def corrupt(path: Path) -> None:
    """Change one byte, keeping the size (as a bad mirror or a bit flip would)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _config(base_url: str) -> dict:
    return {"repository": REPOSITORY, "commit": COMMIT, "url_template": base_url + TEMPLATE}


def test_download_fetches_and_verifies_every_file(served, checksums: dict, tmp_path: Path) -> None:
    base_url, _ = served
    target = tmp_path / "download" / COMMIT
    reference.download(_config(base_url), checksums, target)
    assert len(reference.verify(target, checksums)) == len(checksums)
    # a file name with a space is quoted in the URL and arrives intact
    assert (target / "UserStudy/Coding Answers.xlsx").is_file()
    assert list(target.parent.iterdir()) == [target]  # the staging directory is gone


def test_download_fills_the_folders_snakemake_made(served, checksums: dict, tmp_path: Path) -> None:
    # Snakemake creates the folders of a job's outputs before the job: the download must not
    # take the existing (empty) target for a finished one
    base_url, _ = served
    target = tmp_path / "download" / COMMIT
    for name in checksums:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
    reference.download(_config(base_url), checksums, target)
    assert len(reference.verify(target, checksums)) == len(checksums)


def test_corrupted_download_leaves_nothing_behind(served, checksums: dict, tmp_path: Path) -> None:
    base_url, files = served
    corrupt(files / "UserStudy/Q61Cohen.csv")
    target = tmp_path / "download" / COMMIT
    with pytest.raises(DataError, match=r"UserStudy/Q61Cohen.csv: downloaded file .* sha256"):
        reference.download(_config(base_url), checksums, target)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no staging directory left either


def test_http_error_names_the_url_and_status(served, checksums: dict, tmp_path: Path) -> None:
    base_url, _ = served
    config = _config(base_url) | {"commit": "0" * 40}  # a commit the server does not have
    url = f"{base_url}/{REPOSITORY}/{'0' * 40}/{min(checksums)}"
    with pytest.raises(reference.DownloadError) as caught:
        reference.download(config, checksums, tmp_path / "x")
    assert f"download failed: {url}: HTTP 404 File not found; nothing was placed" in str(
        caught.value
    )
    assert not (tmp_path / "x").exists()


def test_unreachable_server_names_the_url_and_reason(checksums: dict, tmp_path: Path) -> None:
    port = closed_port()
    with pytest.raises(reference.DownloadError) as caught:
        reference.download(_config(f"http://127.0.0.1:{port}"), checksums, tmp_path / "x")
    assert f"download failed: http://127.0.0.1:{port}/{REPOSITORY}/" in str(caught.value)
    assert "Connection refused" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


# --- the same through the workflow: a clone with no ../shared -------------------------------


def run_reference_rules(
    repo: Path, workdir: Path, url_template: str
) -> subprocess.CompletedProcess:
    """``snakemake -c1 results/reference/verified.csv`` in ``workdir``, with ``reference.dir``
    absent (so the workflow downloads) into ``workdir/downloads``, from ``url_template``."""
    config = yaml.safe_load((repo / "config.yaml").read_text())
    config["stages"] = {name: name == "reference" for name in config["stages"]}
    config["reference"] |= {
        "dir": str(workdir / "no-shared-reference"),
        "download_dir": str(workdir / "downloads"),
        "url_template": url_template,
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    command = [
        *(sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile")),
        *("-d", str(workdir), "--configfile", str(workdir / "config.yaml"), "-c1"),
        "results/reference/verified.csv",
    ]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)


@pytest.mark.workflow
def test_workflow_downloads_when_there_is_no_shared_copy(
    repo_root: Path, served, checksums: dict, tmp_path: Path
) -> None:
    base_url, _ = served
    run = run_reference_rules(repo_root, tmp_path, base_url + TEMPLATE)
    assert run.returncode == 0, run.stderr[-3000:]
    log = (tmp_path / "logs/reference/download.log").read_text()
    assert log.count(" downloading ") == len(checksums), log
    verified = pd.read_csv(tmp_path / "results/reference/verified.csv")
    assert sorted(verified["file"]) == sorted(checksums)
    assert dict(zip(verified["file"], verified["sha256"], strict=True)) == checksums
    assert [p.name for p in (tmp_path / "downloads").iterdir()] == [COMMIT]  # no staging left
    # and once there, the files are not fetched again
    again = run_reference_rules(repo_root, tmp_path, base_url + TEMPLATE)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.workflow
def test_workflow_rejects_a_corrupted_file_and_places_none(
    repo_root: Path, served, tmp_path: Path
) -> None:
    base_url, files = served
    corrupt(files / "UserStudy/webex-dump.json")
    run = run_reference_rules(repo_root, tmp_path, base_url + TEMPLATE)
    assert run.returncode != 0
    log = (tmp_path / "logs/reference/download.log").read_text()
    url = f"{base_url}/{REPOSITORY}/{COMMIT}/UserStudy/webex-dump.json"
    expected = f"UserStudy/webex-dump.json: downloaded file from {url} has sha256 "
    assert expected in log, log
    assert "1 of 25 files fail the pinned checksums" in log
    assert expected in run.stderr  # on the terminal too, not only in the log
    assert files_under(tmp_path / "downloads") == []  # no reference file in place, no staging
    assert not (tmp_path / "results/reference/verified.csv").exists()


@pytest.mark.workflow
def test_workflow_offline_names_the_failed_download(repo_root: Path, tmp_path: Path) -> None:
    port = closed_port()
    run = run_reference_rules(repo_root, tmp_path, f"http://127.0.0.1:{port}" + TEMPLATE)
    assert run.returncode != 0
    log = (tmp_path / "logs/reference/download.log").read_text()
    first = "BgActivityClassifier/ParseSourceData/new_data_10cm.txt"
    failure = f"download failed: http://127.0.0.1:{port}/{REPOSITORY}/{COMMIT}/{first}: "
    assert failure in log and "Connection refused" in log, log
    assert "missing" not in log  # the failure is the download, not an empty folder
    assert failure in run.stderr
    assert files_under(tmp_path / "downloads") == []
