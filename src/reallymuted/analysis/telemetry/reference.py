"""The workflow's decode of the authors' released record, and the claim values of T1."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from reallymuted.analysis.telemetry.decode import DecodeReport
from reallymuted.analysis.telemetry.encode import _iso
from reallymuted.analysis.telemetry.records import GAIN_COLUMNS, SOURCE, VOLUME_COLUMNS
from reallymuted.analysis.telemetry.scan import decode_files
from reallymuted.io import DataError, write_csv, write_json

log = logging.getLogger(__name__)


def claim_values(table: pd.DataFrame, report: DecodeReport) -> dict[str, Any]:
    """Named numbers for claim T1: what decoded records say about a muted microphone.

    ``gain_range`` is [lowest, highest] of all three gains (the paper: "vary, roughly 14–97"),
    ``volumes`` and ``capture_packets_per_second`` the distinct values seen (the paper: constant
    27369, and 100 while muted); record spacing needs more than one record (the paper: 60 s).
    """
    gains = pd.concat([table[c] for c in GAIN_COLUMNS]).dropna()
    volumes = pd.concat([table[c] for c in VOLUME_COLUMNS]).dropna()
    values: dict[str, Any] = {
        "records": report.records_decoded,
        "records_found": report.records_found,
        "intervals": len(table),
        "warnings": len(report.warnings),
        "errors": len(report.errors),
        "gain_range": [_scalar(gains.min()), _scalar(gains.max())] if len(gains) else [],
    }
    for column in GAIN_COLUMNS:
        values[f"{column}_min"] = _scalar(table[column].min()) if len(table) else None
        values[f"{column}_max"] = _scalar(table[column].max()) if len(table) else None
    values["volumes"] = sorted({_scalar(v) for v in volumes})
    values["capture_packets_per_second"] = sorted(
        {_scalar(v) for v in table["capture_packets_per_second"].dropna()}
    )
    records = table.drop_duplicates(["source_file", "line", "record"])
    # a timestamp that is not ISO 8601 is still a row, but takes no part in the spacing
    parsed = pd.to_datetime(
        records["record_timestamp"], utc=True, errors="coerce", format="ISO8601"
    )
    stamps = sorted(set(parsed.dropna()))
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    values["record_spacing_s_median"] = float(pd.Series(gaps).median()) if gaps else None
    values["record_spacing_s_min"] = min(gaps) if gaps else None
    values["record_spacing_s_max"] = max(gaps) if gaps else None
    values["first_record_timestamp"] = _iso(stamps[0]) if stamps else None
    values["last_record_timestamp"] = _iso(stamps[-1]) if stamps else None
    return values


def _scalar(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return int(value) if isinstance(value, float) and value.is_integer() else value


def decode_reference(path: str | Path, out: dict[str, str | Path], name: str) -> DecodeReport:
    """Decode the authors' record(s) and write ``out['table']``, ``problems`` and ``values``.

    The file is checksum-verified, so an error here means the decoder is wrong: stop the run.
    Redaction placeholders are expected (a warning, kept in the problems table).
    """
    report = decode_files([path], names={str(path): name})
    if report.errors or not report.records_decoded:
        raise DataError(f"{path}: the reference telemetry did not decode\n{report.summary()}")
    table = report.table()
    table.insert(0, "source", SOURCE)
    problems = report.problems_table()
    problems.insert(0, "source", SOURCE)
    write_csv(out["table"], table)
    write_csv(out["problems"], problems)
    write_json(out["values"], {"source": SOURCE, **claim_values(table, report)})
    log.info("reference telemetry: %s", report.summary())
    return report
