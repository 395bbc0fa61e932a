"""Shared fixtures: the repository, the authors' reference data, and a scratch copy helper."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = (REPO / "../shared/reference/vcamutebutton-popets22").resolve()

RULE = re.compile(r"^(?P<indent>[ ]*)rule (?P<name>\w+):\n", re.M)
USE_RULE = re.compile(r"^[ ]*use rule (?P<base>\w+) as (?P<name>\w+)", re.M)


def workflow_rules(repo: Path = REPO) -> dict[str, dict[str, str | None]]:
    """name -> {conda, script} of every rule in the workflow's files (its body's directives)."""
    constants = dict(
        re.findall(
            r'^(\w+_ENV) = "([^"]+)"', (repo / "workflow/rules/common.smk").read_text(), re.M
        )
    )
    found: dict[str, dict[str, str | None]] = {}
    for path in [repo / "Snakefile", *sorted((repo / "workflow/rules").glob("*.smk"))]:
        text = path.read_text()
        matches = list(RULE.finditer(text))
        for i, match in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            body = text[match.end() : end]
            conda = re.search(r"^\s+conda:\s*\n\s+(\S+)", body, re.M)
            script = re.search(r'^\s+script:\s*\n\s+"([^"]+)"', body, re.M)
            # a per-session rule runs its script as a command (common.smk, script_command)
            command = re.search(r'^\s+shell:\s*\n\s+script_command\("(\w+)"\)', body, re.M)
            norun = not re.search(r"^\s+(script|shell|run|wrapper|notebook):", body, re.M)
            env = conda.group(1).strip('"') if conda else None
            found[match["name"]] = {
                "conda": constants.get(env, env),
                "script": script.group(1)
                if script
                else f"../../scripts/{command.group(1)}.py"
                if command
                else None,
                "norun": "yes" if norun else None,
                "file": str(path.relative_to(repo)),
            }
        for use in USE_RULE.finditer(text):  # `use rule a as b` inherits a's directives
            found[use["name"]] = {**found[use["base"]], "file": str(path.relative_to(repo))}
    return found


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


@pytest.fixture(autouse=True)
def both_packet_readers_agree(request: pytest.FixtureRequest):
    """After a test, every capture it left under its tmp_path (session output dirs included)
    is read by the native reader and by tshark, and must come out the same field by field."""
    # taken before the test, so that tmp_path is torn down after this check
    tmp_path = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp_path is None:
        return
    from reallymuted.analysis.readercheck import compare_readers_under

    differences = compare_readers_under(tmp_path, limit=5)
    if differences:
        pytest.fail("native and tshark readers differ:\n" + "\n".join(differences))
