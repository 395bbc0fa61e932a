"""Write the telemetry test samples of this directory with our own encoder (no authors' data).

    .venv/bin/python tests/data/telemetry/make_samples.py [OUT_DIR]

Everything is deterministic (fixed gains and times, gzip mtime 0), so rerunning gives the same
bytes; tests/test_telemetry.py checks that. README.md says what each file holds and which
lines the tests expect.
"""

from __future__ import annotations

import base64
import gzip
import json
import sys
from pathlib import Path

from reallymuted.analysis.telemetry import (
    encode_wmequality,
    gzip_b64,
    wmequality_payload,
    wrap_entries,
)

HERE = Path(__file__).resolve().parent


def gains(max_gain: int, mean_gain: int, min_gain: int) -> dict[str, int]:
    return {"audio_max_gain": max_gain, "audio_mean_gain": mean_gain, "audio_min_gain": min_gain}


def minute(k: int) -> str:
    return f"2021-11-24T17:{k:02d}:51.668Z"


def compact(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def wrapper_json() -> str:
    """Pretty-printed wrapper: wmequality, an entry of another type, wmequality (2 intervals)."""
    blobs = [
        gzip_b64(wmequality_payload([gains(51, 45, 14)], minute(0))),
        gzip_b64({"event": {"name": "client.info"}}),
        gzip_b64(wmequality_payload([gains(60, 40, 15), gains(97, 80, 30)], minute(1))),
    ]
    return json.dumps(wrap_entries(blobs, ["wmequality", "clientinfo", "wmequality"]), indent=2)


def payload_json() -> str:
    """A bare decoded payload like the authors' dump, with our own bare [redacted] tokens."""
    payload = wmequality_payload([gains(33, 22, 11)], minute(2), first_interval_number=7)
    payload["event"]["identifiers"] = {"locusId": "SECRET"}
    payload["origin"]["localIP"] = "SECRET-IP"
    text = json.dumps(payload, indent=2)
    text = text.replace('{\n      "locusId": "SECRET"\n    }', "{\n      [redacted]\n    }")
    return text.replace('"SECRET-IP"', " [redacted]")


def list_json() -> str:
    """A JSON list holding a wrapper, a bare payload and another wrapper."""
    items = [
        encode_wmequality([gains(70, 50, 20)], minute(3)),
        wmequality_payload([gains(71, 51, 21)], minute(4)),
        encode_wmequality([gains(72, 52, 22)], minute(5)),
    ]
    return json.dumps(items, indent=1)


def records_jsonl() -> str:
    """JSON lines: noise, three wrappers (one with two wmequality entries)."""
    two = wrap_entries(
        [
            gzip_b64(wmequality_payload([gains(81, 61, 31)], minute(7))),
            gzip_b64(wmequality_payload([gains(82, 62, 32)], minute(8))),
        ]
    )
    lines = [
        {"t": 0.0, "event": "join"},
        encode_wmequality([gains(80, 60, 30)], minute(6)),
        {"t": 1.5, "event": "mute"},
        two,
        encode_wmequality([gains(83, 63, 33)], minute(9)),
    ]
    return "".join(compact(line) + "\n" for line in lines)


def request(body: bytes, headers: dict[str, str]) -> bytes:
    head = "POST /metrics/clientmetrics HTTP/1.1\r\nHost: telemetry.example\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


def chunked(body: bytes, size: int) -> bytes:
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks) + b"0\r\n\r\n"


def requests_http() -> bytes:
    """Three raw requests: Content-Length; chunked (200-byte chunks); chunked gzip body."""
    plain = compact(encode_wmequality([gains(40, 30, 20)], minute(10))).encode()
    split = compact(encode_wmequality([gains(41, 31, 21)], minute(11))).encode()
    packed = gzip.compress(
        compact(encode_wmequality([gains(42, 32, 22)], minute(12))).encode(), mtime=0
    )
    return b"".join(
        [
            request(plain, {"Content-Type": "application/json", "Content-Length": str(len(plain))}),
            b"\r\n",
            request(chunked(split, 200), {"Transfer-Encoding": "chunked"}),
            request(
                chunked(packed, 256),
                {"Transfer-Encoding": "chunked", "Content-Encoding": "gzip"},
            ),
        ]
    )


def hook_log() -> str:
    """A Frida-style hook log: bodies plain, JSON-escaped, escaped twice, URL-encoded, noise."""
    body = [
        compact(encode_wmequality([gains(50 + k, 40 + k, 14 + k)], minute(20 + k)))
        for k in range(4)
    ]
    loose = encode_wmequality([gains(54, 44, 18)], minute(24))["telemetrics"][0]["v"]["gzipb64data"]
    return "".join(
        [
            "[*] attached to CiscoCollabHost.exe (pid 4242)\n",
            '[hook] send {"event": {"kind": "ui", "button": "mute"}} state=muted\n',
            f"[hook] HttpSendRequestW POST https://telemetry.example/metrics body={body[0]}\n",
            '[hook] {"event": "mute", "t": 12.5}\n',
            compact({"ts": 13.0, "msg": "POST body", "body": body[1]}) + "\n",
            compact({"ts": 14.0, "msg": compact({"note": "nested", "body": body[2]})}) + "\n",
            "[hook] WASAPI GetBuffer frames=480 peak=0.0012 rms=0.0003\n",
            f"[hook] form gzipb64data={loose.replace('+', '%2B').replace('/', '%2F')}&v=1\n",
            f"[hook] {body[3]} {compact({'event': {'kind': 'after'}})}\n",
        ]
    )


def broken_log() -> str:
    """Good records interleaved with every kind of damage, one per line (see README)."""
    good = encode_wmequality([gains(61, 41, 21)], minute(30))
    blob = gzip_b64(wmequality_payload([gains(62, 42, 22)], minute(31)))
    bad_base64 = blob[:40] + "!" + blob[41:]
    raw = base64.b64decode(blob)
    truncated_gzip = base64.b64encode(raw[: len(raw) - 12]).decode()
    corrupt = bytearray(raw)
    corrupt[len(corrupt) // 2] ^= 0xFF
    corrupt_gzip = base64.b64encode(bytes(corrupt)).decode()
    no_levels = wmequality_payload([gains(63, 43, 23)], minute(32))
    del no_levels["event"]["intervals"][0]["audioTransmit"][0]["levels"]
    text_levels = wmequality_payload([gains(64, 44, 24)], minute(33))
    text_levels["event"]["intervals"][0]["audioTransmit"][0]["levels"]["audioMeanGain"] = "44"
    no_intervals = wmequality_payload([gains(65, 45, 25)], minute(34))
    no_intervals["event"]["intervals"] = []
    cut_line = compact(encode_wmequality([gains(66, 46, 26)], minute(35)))
    lines = [
        "log start",
        compact(good),
        compact(wrap_entries([bad_base64])),
        compact(wrap_entries([truncated_gzip])),
        compact(wrap_entries([gzip_b64(no_levels)])),
        compact(
            wrap_entries(
                [
                    gzip_b64(wmequality_payload([gains(67, 47, 27)], minute(36))),
                    gzip_b64(text_levels),
                ]
            )
        ),
        compact(wrap_entries([corrupt_gzip])),
        compact(wrap_entries([gzip_b64(no_intervals)])),
        compact(wrap_entries([gzip_b64(b"this is not json")])),
        "POST body=" + cut_line[: len(cut_line) // 2],
        compact(encode_wmequality([gains(68, 48, 28)], minute(37))),
        '{"telemetrics":[{"t":"wmequality","v":{"gzipb64data":42}}]}',
        "log end",
    ]
    return "".join(line + "\n" for line in lines)


SAMPLES = {
    "wrapper.json": wrapper_json,
    "payload.json": payload_json,
    "list.json": list_json,
    "records.jsonl": records_jsonl,
    "requests.http": requests_http,
    "hook.log": hook_log,
    "broken.log": broken_log,
}


def main(out_dir: Path = HERE) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, make in SAMPLES.items():
        content = make()
        data = content.encode() if isinstance(content, str) else content
        (out_dir / name).write_bytes(data)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
