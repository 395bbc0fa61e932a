"""Small file helpers shared by every stage: atomic writes and tidy-table output."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas costs a third of a second to import: the testbed's processes
    import pandas as pd  # start for every session and never write a table


class DataError(ValueError):
    """An input file is missing, truncated or not in the expected shape.

    The message always names the file (and the line or row where it can).
    """


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    A reader therefore sees either the old file, the complete new one, or nothing — never a
    half-written file, even if the writer is killed.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; give the result the permissions an ordinary file would get
        tmp.chmod(0o666 & ~_umask())
        tmp.replace(final)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    """Strict JSON: NaN (no value) is written as null, which every JSON reader accepts."""
    text = json.dumps(
        _no_nan(data), indent=2, sort_keys=True, default=_json_default, allow_nan=False
    )
    write_text(path, text + "\n")


def _no_nan(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    """Write a table as CSV with stable float formatting, so reruns are byte-identical."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")


def write_parquet(path: str | Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, sort_keys=True, default=_json_default) + "\n" for r in rows)
    write_text(path, text)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read JSON lines; a line that is not JSON is a :class:`DataError` naming file and line."""
    rows = []
    with Path(path).open() as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
    return rows


def log_to_file(log_path: str | Path | None, level: int = logging.INFO) -> logging.Logger:
    """Send this process's log records and stderr to a rule's log file (or stderr)."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        # a rerun replaces the log: the log is of this run's job only
        stream = Path(log_path).open("w", buffering=1)  # noqa: SIM115 (lives as long as the job)
        sys.stderr = stream
        handler: logging.Handler = logging.StreamHandler(stream)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    return logging.getLogger("reallymuted")


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
