"""The ``reallymuted`` console script, run as a user runs it (a subprocess of the venv's script)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from reallymuted import cli
from reallymuted.analysis import telemetry

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".venv" / "bin" / "reallymuted"


@pytest.fixture(scope="module")
def reallymuted() -> Path:
    if not SCRIPT.is_file():
        pytest.fail(f"{SCRIPT} missing: run `.venv/bin/pip install --no-deps -e .` (make setup)")
    return SCRIPT


@pytest.fixture
def samples(test_data: Path) -> Path:
    return test_data / "telemetry"


def run(script: Path, *args: str | Path, cwd: Path, stdin: bytes | None = None):
    return subprocess.run(
        [script, *map(str, args)], cwd=cwd, input=stdin, capture_output=True, timeout=120
    )


def test_decode_good_files_exits_0(reallymuted, samples, tmp_path):
    result = run(
        reallymuted,
        "telemetry",
        "decode",
        samples / "wrapper.json",
        samples / "hook.log",
        "-o",
        "out/intervals.csv",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr.decode()
    table = pd.read_csv(tmp_path / "out/intervals.csv")
    assert list(table.columns) == telemetry.ROW_COLUMNS
    assert len(table) == 3 + 5
    assert (
        table.source_file.map(lambda f: Path(f).name).tolist()
        == ["wrapper.json"] * 3 + ["hook.log"] * 5
    )
    problems = pd.read_csv(tmp_path / "out/intervals.problems.csv")
    assert list(problems.columns) == telemetry.PROBLEM_COLUMNS and problems.empty
    stderr = result.stderr.decode()
    assert "2 file(s): 7 record(s) found, 7 decoded, 8 interval(s)" in stderr
    assert "0 error(s)" in stderr
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []


def test_failed_records_exit_3_and_good_rows_are_still_written(reallymuted, samples, tmp_path):
    result = run(
        reallymuted,
        "telemetry",
        "decode",
        samples / "broken.log",
        samples / "payload.json",
        "-o",
        "rows.csv",
        "--problems",
        "bad.csv",
        cwd=tmp_path,
    )
    assert result.returncode == 3
    assert len(pd.read_csv(tmp_path / "rows.csv")) == 3 + 1
    problems = pd.read_csv(tmp_path / "bad.csv")
    assert (problems.severity == "error").sum() == 9
    assert (problems.severity == "warning").sum() == 1
    assert not (tmp_path / "rows.problems.csv").exists()
    stderr = result.stderr.decode()
    assert "13 record(s) found, 4 decoded" in stderr and "9 error(s)" in stderr
    assert f"{samples / 'broken.log'}:4 (telemetrics[0]): truncated gzip" in stderr
    assert f"{samples / 'broken.log'}:3 (telemetrics[0]): bad base64" in stderr
    assert f"{samples / 'payload.json'}:1: redaction placeholders replaced" in stderr


def test_unreadable_file_exits_2_and_writes_nothing(reallymuted, samples, tmp_path):
    result = run(
        reallymuted,
        "telemetry",
        "decode",
        samples / "wrapper.json",
        "missing.log",
        "-o",
        "o.csv",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "missing.log" in result.stderr.decode()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["telemetry"],
        ["telemetry", "decode", "x.log"],  # no -o
        ["telemetry", "decode", "-o", "o.csv"],  # no file
        ["telemetry", "frobnicate"],
    ],
)
def test_usage_errors_exit_2(reallymuted, tmp_path, args):
    result = run(reallymuted, *args, cwd=tmp_path)
    assert result.returncode == 2
    assert b"usage:" in result.stderr


def test_output_may_not_overwrite_an_input(reallymuted, samples, tmp_path):
    target = tmp_path / "in.json"
    target.write_bytes((samples / "wrapper.json").read_bytes())
    result = run(reallymuted, "telemetry", "decode", target, "-o", target, cwd=tmp_path)
    assert result.returncode == 2
    assert target.read_bytes() == (samples / "wrapper.json").read_bytes()


def test_stdin(reallymuted, samples, tmp_path):
    data = (samples / "records.jsonl").read_bytes()
    result = run(reallymuted, "telemetry", "decode", "-", "-o", "o.csv", cwd=tmp_path, stdin=data)
    assert result.returncode == 0, result.stderr.decode()
    table = pd.read_csv(tmp_path / "o.csv")
    assert table.source_file.unique().tolist() == ["-"] and len(table) == 4


def test_empty_input_is_not_an_error_but_is_said(reallymuted, tmp_path):
    (tmp_path / "empty.log").write_bytes(b"")
    result = run(reallymuted, "telemetry", "decode", "empty.log", "-o", "o.csv", cwd=tmp_path)
    assert result.returncode == 0
    assert b"no wmequality record found" in result.stderr
    assert pd.read_csv(tmp_path / "o.csv").empty


def test_command_groups_are_pluggable(capsys):
    """A later stage adds its group by appending one registration function."""

    def add_demo(subparsers) -> None:
        demo = subparsers.add_parser("demo")
        demo.set_defaults(handler=lambda args: 7)

    cli.COMMAND_GROUPS.append(add_demo)
    try:
        assert cli.main(["demo"]) == 7
    finally:
        cli.COMMAND_GROUPS.remove(add_demo)
    with pytest.raises(SystemExit):
        cli.main(["demo"])
    assert "invalid choice" in capsys.readouterr().err


def test_problems_path():
    assert cli.problems_path("a/OUT.csv") == Path("a/OUT.problems.csv")
    assert cli.problems_path("a/out.tsv") == Path("a/out.tsv.problems.csv")


def test_guard_usage_errors_and_an_absent_guard_are_said(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert cli.main(["guard", "run"]) == cli.EXIT_USAGE  # neither a command nor --pid
    assert cli.main(["guard", "run", "--pid", "1", "--", "true"]) == cli.EXIT_USAGE
    assert "give the app to run after --, or --pid" in capsys.readouterr().err
    socket_path = tmp_path / "no-guard.sock"
    assert cli.main(["guard", "status", "--socket", str(socket_path)]) == 1
    assert f"no guard at {socket_path}" in capsys.readouterr().err
