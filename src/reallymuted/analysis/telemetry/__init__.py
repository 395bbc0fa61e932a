"""Webex ``wmequality`` telemetry: find records in any text, decode them to a tidy table.

Webex posts media-quality telemetry about once a minute, also while the user is muted (paper
claim T1). The outer JSON is ``{"telemetrics": [{"t": "wmequality", "v": {"gzipb64data":
"H4sI…"}}, …]}``; ``gzipb64data`` is base64 of a gzip of the *payload* JSON, whose
``event.intervals[k].audioTransmit[0].levels`` carries the microphone gains and volumes of one
interval. This module turns such records into one row per interval.

Researchers hold these records in many shapes: the authors released one decoded payload
(pretty-printed, with bare ``[redacted]`` tokens, so not strict JSON); a proxy writes raw HTTP
requests (possibly chunked); a Frida or debugger hook prints the POST body in the middle of a
log line, often JSON-escaped inside another string. So records are *found* rather than parsed
by file type: one pass over the bytes looks for the ``"telemetrics"``/``"event"`` keys (plain or
escaped), for HTTP request lines and for base64 gzip blobs (``H4sI…``), and decodes JSON with
:meth:`json.JSONDecoder.raw_decode` only where such a marker is, in a window that grows only
when the parser runs out of input. The work is linear in the file size, files are memory-mapped,
and no line is ``json.loads``-ed on speculation, so a few hundred MB of log are fine.

Every record found ends up either as rows or as a *problem* (file, line, wrapper entry index,
reason): redaction placeholders are a warning (the record is kept, placeholders read as null);
anything else broken is an error (the record yields no rows). Nothing is skipped silently,
except wrapper entries of another telemetry type (counted as ``ignored_entries``).

The parts: :mod:`.records` (what is found: records, problems, the columns), :mod:`.decode`
(one record into rows, and the report of a decode), :mod:`.scan` (finding records in any
bytes), :mod:`.encode` (making records: the tests and the webex-2021 profile), :mod:`.reference`
(the workflow's decode of the released record and T1's values), :mod:`.sessions` (the
telemetry the testbed profiles posted, from the capture and the collector). The names below
are the module's public interface.
"""

from __future__ import annotations

from reallymuted.analysis.telemetry.decode import (
    DecodeReport,
    decode_gzipb64,
    parse_payload_json,
    payload_rows,
    record_timestamp,
)
from reallymuted.analysis.telemetry.encode import (
    encode_wmequality,
    gzip_b64,
    wmequality_payload,
    wrap_entries,
)
from reallymuted.analysis.telemetry.records import (
    DEFAULT_VOLUME,
    GAIN_COLUMNS,
    LEVELS,
    PROBLEM_COLUMNS,
    ROW_COLUMNS,
    SOURCE,
    TELEMETRY_TYPE,
    VOLUME_COLUMNS,
    Problem,
    Record,
    RecordError,
)
from reallymuted.analysis.telemetry.reference import claim_values, decode_reference
from reallymuted.analysis.telemetry.scan import decode_bytes, decode_files, find_records

__all__ = [
    "DEFAULT_VOLUME",
    "GAIN_COLUMNS",
    "LEVELS",
    "PROBLEM_COLUMNS",
    "ROW_COLUMNS",
    "SOURCE",
    "TELEMETRY_TYPE",
    "VOLUME_COLUMNS",
    "DecodeReport",
    "Problem",
    "Record",
    "RecordError",
    "claim_values",
    "decode_bytes",
    "decode_files",
    "decode_gzipb64",
    "decode_reference",
    "encode_wmequality",
    "find_records",
    "gzip_b64",
    "parse_payload_json",
    "payload_rows",
    "record_timestamp",
    "wmequality_payload",
    "wrap_entries",
]
