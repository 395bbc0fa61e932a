"""Webex wmequality decoding: the authors' record, our encoder, every container shape, damage.

The samples under tests/data/telemetry/ were written by make_samples.py there (our encoder,
never the authors' files); the expected lines below were read off those files by hand.
"""

from __future__ import annotations

import base64
import gzip
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from reallymuted.analysis import telemetry
from reallymuted.io import DataError

DUMP = "UserStudy/webex-dump.json"


@pytest.fixture
def samples(test_data: Path) -> Path:
    return test_data / "telemetry"


def decode(path: Path) -> telemetry.DecodeReport:
    return telemetry.decode_files([path], names={str(path): path.name})


def rows(report: telemetry.DecodeReport, *columns: str) -> list[tuple]:
    return [tuple(r) for r in report.table()[list(columns)].itertuples(index=False)]


def errors(report: telemetry.DecodeReport) -> dict[int, str]:
    return {p.line: p.reason for p in report.errors}


# --- the authors' record ---------------------------------------------------------------------


def test_reference_record_decodes_to_the_levels_written_in_it(reference_dir):
    path = reference_dir / DUMP
    text = path.read_text()
    # the same numbers read by another route: a regex over the file's text
    expected = {k: int(v) for k, v in re.findall(r'"(audio\w+(?:Gain|Volume))":\s*(\d+)', text)}
    assert len(expected) == 6
    report = telemetry.decode_files([path])
    table = report.table()
    assert len(table) == 1 and report.records_found == report.records_decoded == 1
    row = table.iloc[0]
    for key, column in telemetry.LEVELS.items():
        assert row[column] == expected[key], key
    assert row["interval"] == int(re.search(r'"intervalNumber":\s*(\d+)', text).group(1))
    packets = re.search(r'"captureHardwareProvidedAudioPacketsPerSecond":\s*(\d+)', text)
    assert row["capture_packets_per_second"] == int(packets.group(1))
    assert row["record_timestamp"] == re.search(r'"startTime":\s*"([^"]+)"', text).group(1)
    assert row["line"] == 1 and pd.isna(row["record"])
    # the placeholders are a warning that names their number, and nothing is an error
    assert not report.errors
    [warning] = report.warnings
    assert f"({text.count('[redacted]')} [redacted]" in warning.reason


def test_reference_json_is_not_strict_json_so_the_warning_is_earned(reference_dir):
    with pytest.raises(json.JSONDecodeError):
        json.loads((reference_dir / DUMP).read_text())


def test_decode_reference_writes_table_problems_and_t1_values(reference_dir, tmp_path):
    out = {k: tmp_path / f"{k}.out" for k in ("table", "problems", "values")}
    telemetry.decode_reference(reference_dir / DUMP, out, name=DUMP)
    table = pd.read_csv(out["table"])
    assert list(table.columns) == ["source", *telemetry.ROW_COLUMNS]
    assert table.source.tolist() == ["reference"] and table.source_file.tolist() == [DUMP]
    problems = pd.read_csv(out["problems"])
    assert problems.severity.tolist() == ["warning"]
    values = json.loads(out["values"].read_text())
    assert values["records"] == 1 and values["intervals"] == 1 and values["warnings"] == 1
    assert values["gain_range"] == [14, 51]
    assert values["volumes"] == [27369] and values["capture_packets_per_second"] == [100]
    assert values["record_spacing_s_median"] is None


def test_decode_reference_stops_on_a_record_that_fails(samples, tmp_path):
    out = {k: tmp_path / f"{k}.out" for k in ("table", "problems", "values")}
    with pytest.raises(DataError, match=r"broken\.log:3"):
        telemetry.decode_reference(samples / "broken.log", out, name="broken.log")
    assert not out["table"].exists()


# --- the encoder -----------------------------------------------------------------------------


def test_encoder_round_trip():
    rng = random.Random(7)
    intervals = [
        {
            "audio_max_gain": rng.randint(50, 97),
            "audio_mean_gain": rng.randint(20, 49) + 0.5,
            "audio_min_gain": rng.randint(0, 19),
            "audio_max_volume": 30000 + k,
        }
        for k in range(5)
    ]
    record = telemetry.encode_wmequality(intervals, "2021-11-24T17:02:51.668Z", volume=123)
    [entry] = record["telemetrics"]
    assert entry["t"] == "wmequality" and entry["v"]["gzipb64data"].startswith("H4sI")
    payload = json.loads(gzip.decompress(base64.b64decode(entry["v"]["gzipb64data"])))
    assert payload["event"]["sourceMetadata"]["endTime"] == "2021-11-24T17:07:51.668Z"
    report = telemetry.decode_bytes(json.dumps(record).encode(), "x")
    table = report.table()
    assert table.interval.tolist() == [1, 2, 3, 4, 5]
    for column in telemetry.GAIN_COLUMNS:
        assert table[column].tolist() == [i[column] for i in intervals]
    assert table.audio_max_volume.tolist() == [30000 + k for k in range(5)]
    assert set(table.audio_min_volume) == {123}
    assert set(table.record_timestamp) == {"2021-11-24T17:02:51.668Z"}
    assert set(table.capture_packets_per_second) == {100}


def test_encoder_accepts_payload_level_names_and_is_deterministic():
    interval = {"audioMaxGain": 9, "audioMeanGain": 8, "audioMinGain": 7}
    first = telemetry.encode_wmequality([interval], "2022-01-01T00:00:00.000Z")
    assert first == telemetry.encode_wmequality([interval], "2022-01-01T00:00:00.000Z")
    with pytest.raises(ValueError, match="audioMeanGain"):
        telemetry.encode_wmequality([{"audioMaxGain": 1}], "2022-01-01T00:00:00.000Z")


def test_samples_are_what_make_samples_writes(samples, tmp_path):
    subprocess.run(
        [sys.executable, samples / "make_samples.py", tmp_path], check=True, capture_output=True
    )
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == sorted(p.name for p in samples.iterdir() if p.suffix not in (".py", ".md"))
    for name in made:
        assert (tmp_path / name).read_bytes() == (samples / name).read_bytes(), name


# --- container shapes ------------------------------------------------------------------------

SHAPES = {
    # file: [(line, wrapper entry index or None, interval, audio_max_gain), ...]
    "wrapper.json": [(3, 0, 1, 51), (15, 2, 1, 60), (15, 2, 2, 97)],
    "payload.json": [(1, None, 7, 33)],
    "list.json": [(4, 0, 1, 70), (12, None, 1, 71), (77, 0, 1, 72)],
    "records.jsonl": [(2, 0, 1, 80), (4, 0, 1, 81), (4, 1, 1, 82), (5, 0, 1, 83)],
    "requests.http": [(6, 0, 1, 40), (12, 0, 1, 41), (26, 0, 1, 42)],
    "hook.log": [(3, 0, 1, 50), (5, 0, 1, 51), (6, 0, 1, 52), (8, None, 1, 54), (9, 0, 1, 53)],
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_container_shape(samples, name):
    report = decode(samples / name)
    got = [
        (line, None if pd.isna(record) else record, interval, gain)
        for line, record, interval, gain in rows(
            report, "line", "record", "interval", "audio_max_gain"
        )
    ]
    assert got == SHAPES[name]
    assert not report.errors
    assert set(report.table().source_file) == {name}


def test_entries_of_another_type_are_counted_not_decoded(samples):
    report = decode(samples / "wrapper.json")
    assert report.ignored_entries == 1 and report.records_found == 2
    assert "1 wrapper entry of another telemetry type" in report.summary()


def test_own_redaction_placeholders_are_a_warning_and_the_record_is_kept(samples):
    report = decode(samples / "payload.json")
    [warning] = report.problems
    assert (warning.severity, warning.line) == ("warning", 1)
    assert warning.reason.startswith("redaction placeholders replaced (2 ")


def test_quoted_redaction_text_is_a_value_not_a_placeholder():
    payload = telemetry.wmequality_payload(
        [{"audioMaxGain": 1, "audioMeanGain": 1, "audioMinGain": 1}], "2022-01-01T00:00:00.000Z"
    )
    payload["origin"]["note"] = "[redacted]"
    report = telemetry.decode_bytes(json.dumps(payload, indent=2).encode(), "q")
    assert report.records_decoded == 1 and not report.problems


def test_escaped_and_crlf_and_binary_surroundings(reference_dir):
    dump = (reference_dir / DUMP).read_text()
    wrapper = json.dumps(
        telemetry.encode_wmequality(
            [{"audioMaxGain": 5, "audioMeanGain": 4, "audioMinGain": 3}], "2022-01-01T00:00:00Z"
        ),
        indent=2,
    )
    data = b"".join(
        [
            bytes(range(256)) * 3 + b"\n",  # binary noise, including bytes that are not UTF-8
            b"log: " + json.dumps({"body": dump}).encode() + b"\n",  # the dump, JSON-escaped
            wrapper.replace("\n", "\r\n").encode() + b"\r\n",
        ]
    )
    report = telemetry.decode_bytes(data, "mixed")
    assert rows(report, "line", "audio_max_gain") == [(5, 51), (8, 5)]
    assert [p.severity for p in report.problems] == ["warning"]


def test_noise_that_looks_like_telemetry_is_not_a_record():
    noise = "\n".join(
        [
            '{"event": "mute", "t": 3}',
            '{"event": {"kind": "ui", "x": 1}}',
            '{"subevent": {"intervals": []}}',
            "the word H4sI in prose, and H4sIshort",
            "base64 text QUJDH4sIAAAAAAAAAAAAAAAAAAAAAAAAAA inside another blob",
            '"telemetrics": "not an array"',
        ]
    )
    report = telemetry.decode_bytes(noise.encode(), "noise")
    assert report.records_found == 0 and not report.problems


# --- damage ----------------------------------------------------------------------------------

BROKEN = {
    3: "bad base64",
    4: "truncated gzip",
    5: "no audioTransmit[0].levels",
    6: "audioMeanGain is not numeric ('44')",
    7: "corrupt gzip",
    8: "payload has no intervals",
    9: "payload is not JSON",
    10: "cut short",
    12: "entry has no v.gzipb64data",
}


def test_each_damaged_record_is_reported_with_line_and_reason_and_good_ones_decode(samples):
    report = decode(samples / "broken.log")
    assert rows(report, "line", "record", "audio_max_gain") == [(2, 0, 61), (6, 0, 67), (11, 0, 68)]
    got = errors(report)
    assert sorted(got) == sorted(BROKEN)
    for line, reason in BROKEN.items():
        assert reason in got[line], (line, got[line])
    assert report.records_found == 3 + len(BROKEN) and report.records_decoded == 3
    # the entry with the bad levels is entry 1 of its wrapper; its sibling entry 0 decoded
    assert {p.line: p.record for p in report.errors}[6] == 1
    assert all(p.source_file == "broken.log" for p in report.problems)


def test_damage_in_a_fresh_file(tmp_path):
    """The three damages the issue names, each beside a good record, in a file made here."""
    good = telemetry.gzip_b64(
        telemetry.wmequality_payload(
            [{"audioMaxGain": 90, "audioMeanGain": 50, "audioMinGain": 20}], "2022-01-01T00:00:00Z"
        )
    )
    raw = base64.b64decode(good)
    no_levels = telemetry.wmequality_payload(
        [{"audioMaxGain": 1, "audioMeanGain": 1, "audioMinGain": 1}], "2022-01-01T00:01:00Z"
    )
    no_levels["event"]["intervals"][0]["audioTransmit"][0].pop("levels")
    blobs = [
        good,
        good[:100] + "*" + good[101:],  # corrupted base64
        base64.b64encode(raw[:-30]).decode(),  # truncated gzip
        telemetry.gzip_b64(no_levels),
        good,
    ]
    path = tmp_path / "damaged.json"
    path.write_text(json.dumps(telemetry.wrap_entries(blobs), indent=2))
    report = decode(path)
    assert rows(report, "line", "record") == [(3, 0), (27, 4)]
    assert [(p.line, p.record) for p in report.errors] == [(9, 1), (15, 2), (21, 3)]
    reasons = [p.reason for p in report.errors]
    assert reasons[0].startswith("bad base64") and reasons[1].startswith("truncated gzip")
    assert "no audioTransmit[0].levels" in reasons[2]


def test_a_file_cut_inside_its_only_record_is_an_error(reference_dir, tmp_path):
    text = (reference_dir / DUMP).read_text()
    path = tmp_path / "cut.json"
    path.write_text(text[: len(text) // 2])
    report = decode(path)
    [error] = report.errors
    assert error.line == 1 and "cut short" in error.reason and report.intervals == 0


def test_malformed_chunked_body_is_a_warning_and_its_records_still_count():
    body = json.dumps(
        telemetry.encode_wmequality(
            [{"audioMaxGain": 2, "audioMeanGain": 2, "audioMinGain": 2}], "2022-01-01T00:00:00Z"
        )
    ).encode()
    request = (
        b"POST /m HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\nzz\r\n"
    )
    report = telemetry.decode_bytes(request, "r.http")
    assert report.records_decoded == 1 and rows(report, "line") == [(5,)]
    [warning] = report.warnings
    assert warning.line == 1 and "bad chunk size" in warning.reason


def test_lines_inside_a_chunked_body_are_lines_of_the_file():
    blobs = [
        telemetry.gzip_b64(
            telemetry.wmequality_payload(
                [{"audioMaxGain": k, "audioMeanGain": 2, "audioMinGain": 1}],
                "2022-01-01T00:00:00Z",
            )
        )
        for k in (1, 2)
    ]
    body = json.dumps(telemetry.wrap_entries(blobs), indent=2).encode().splitlines(True)
    chunks = [b"".join(body[i : i + 3]) for i in range(0, len(body), 3)]  # three lines a chunk
    request = b"POST /m HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
        f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks
    )
    # body line k (0-based) sits on file line 5 + 5 * (k // 3) + k % 3: each chunk adds its
    # size line before it and, after its own last newline, an empty CRLF line
    entry_lines = [k for k, line in enumerate(body) if line.strip() == b"{"][1:]
    report = telemetry.decode_bytes(request + b"0\r\n\r\n", "r.http")
    assert rows(report, "line", "audio_max_gain") == [
        (5 + 5 * (k // 3) + k % 3, gain) for k, gain in zip(entry_lines, (1, 2), strict=True)
    ]
    assert not report.problems


def test_record_spacing_of_several_records(samples):
    report = decode(samples / "records.jsonl")
    values = telemetry.claim_values(report.table(), report)
    assert values["records"] == 4
    assert values["record_spacing_s_median"] == 60.0 and values["record_spacing_s_max"] == 60.0
    assert values["gain_range"] == [30, 83]


def test_a_huge_minified_wrapper_keeps_every_entry(tmp_path):
    blob = telemetry.gzip_b64(
        telemetry.wmequality_payload(
            [{"audioMaxGain": 3, "audioMeanGain": 2, "audioMinGain": 1}], "2022-01-01T00:00:00Z"
        )
    )
    path = tmp_path / "big.json"
    path.write_text(json.dumps(telemetry.wrap_entries([blob] * 3000)))
    report = decode(path)
    assert report.records_decoded == 3000
    assert report.table().record.tolist() == list(range(3000))


def test_damaged_input_never_crashes_and_every_record_is_accounted_for(samples, reference_dir):
    """Seeded random damage to every sample: no exception, and found = decoded + errors."""
    rng = random.Random(20220412)
    originals = [
        p.read_bytes() for p in sorted(samples.iterdir()) if p.suffix not in (".py", ".md")
    ]
    originals.append((reference_dir / DUMP).read_bytes())
    inserts = [b'"', b"\\", b"{", b"]", b"\n", b"H4sI", b'"event": {', b'"telemetrics":[', b"\xff"]
    for _ in range(300):
        data = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            if rng.random() < 0.4:
                data[i] = rng.randrange(256)
            elif rng.random() < 0.5:
                data[i:i] = rng.choice(inserts)
            else:
                del data[i : i + rng.randint(1, 300)]
        report = telemetry.decode_bytes(bytes(data), "fuzz")
        assert report.records_found == report.records_decoded + len(report.errors)
        telemetry.claim_values(report.table(), report)
        report.problems_table().to_csv(index=False)
