"""Shared fixtures: the repository, the authors' reference data, and a scratch copy helper."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = (REPO / "../shared/reference/vcamutebutton-popets22").resolve()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The authors' released data; the tests need it (CI runs with ../shared beside the clone)."""
    if not (REFERENCE / "SHA256SUMS").is_file():
        pytest.fail(f"reference data not found at {REFERENCE} (clone with ../shared beside it)")
    return REFERENCE


@pytest.fixture
def test_data() -> Path:
    return REPO / "tests" / "data"
