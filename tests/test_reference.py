"""Reference data: verification against the pinned checksums, and the download path.

The download is exercised for real over HTTP, from a server on loopback that serves a copy of
the released files laid out like the authors' repository.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reallymuted import reference
from reallymuted.io import DataError


@pytest.fixture(scope="module")
def checksums(repo_root: Path) -> dict[str, str]:
    return reference.read_checksums(repo_root / "workflow/resources/reference.sha256")


def test_committed_checksums_match_the_shared_copy(reference_dir: Path, checksums: dict) -> None:
    assert checksums == reference.read_checksums(reference_dir / "SHA256SUMS")


def test_shared_reference_verifies(reference_dir: Path, checksums: dict) -> None:
    table = reference.verify(reference_dir, checksums)
    assert len(table) == len(checksums) == 25


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


@pytest.fixture
def served(reference_dir: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a copy of the reference files."""
    root = tmp_path / "served"
    shutil.copytree(reference_dir, root)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # keep test output quiet
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", root
    finally:
        server.shutdown()
        server.server_close()


def _config(base_url: str) -> dict:
    return {
        "repository": "wi-pi/VCAMuteButton_PoPETS",
        "commit": "ae4a55e7011d65403c1559c268e362e7dfc2d352",
        "url_template": base_url + "/{path}",
    }


def test_download_fetches_and_verifies_every_file(served, checksums: dict, tmp_path: Path) -> None:
    base_url, _ = served
    target = tmp_path / "download" / "commit"
    reference.download(_config(base_url), checksums, target)
    assert len(reference.verify(target, checksums)) == len(checksums)
    # a file name with a space is quoted in the URL and arrives intact
    assert (target / "UserStudy/Coding Answers.xlsx").is_file()


def test_corrupted_download_leaves_nothing_behind(served, checksums: dict, tmp_path: Path) -> None:
    base_url, root = served
    with (root / "UserStudy/Q61Cohen.csv").open("a") as fh:
        fh.write("tampered,,,\n")
    target = tmp_path / "download" / "commit"
    with pytest.raises(DataError, match=r"UserStudy/Q61Cohen.csv: downloaded file .* sha256"):
        reference.download(_config(base_url), checksums, target)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no staging directory left either


def test_unreachable_server_names_the_file(checksums: dict, tmp_path: Path) -> None:
    # port 9 (discard) on loopback: nothing listens, the connection is refused at once
    config = _config("http://127.0.0.1:9")
    with pytest.raises(DataError, match=r"download from http://127\.0\.0\.1:9/.* failed"):
        reference.download(config, checksums, tmp_path / "x")
    assert not (tmp_path / "x").exists()
