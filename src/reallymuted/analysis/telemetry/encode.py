"""Encoding ``wmequality`` records (the tests, and what the webex-2021 testbed profile posts)."""

from __future__ import annotations

import base64
import gzip
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from reallymuted.analysis.telemetry.records import DEFAULT_VOLUME, LEVELS, TELEMETRY_TYPE

log = logging.getLogger(__name__)


def _level_value(interval: dict[str, Any], key: str, default: Any = None) -> Any:
    for name in (key, LEVELS[key]):
        if name in interval:
            return interval[name]
    if default is None:
        raise ValueError(f"interval {interval!r} has no {key} / {LEVELS[key]}")
    return default


def _iso(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def wmequality_payload(
    intervals: list[dict[str, Any]],
    start_time: str,
    *,
    end_time: str | None = None,
    interval_seconds: float = 60,
    first_interval_number: int = 1,
    packets_per_second: int = 100,
    volume: int = DEFAULT_VOLUME,
) -> dict[str, Any]:
    """A payload shaped like the authors' decoded record, one interval per given dict.

    Each interval gives the three gains under the payload's names (``audioMaxGain``) or the
    table's (``audio_max_gain``); volumes default to ``volume``, and an interval may override
    ``intervalNumber`` and ``captureHardwareProvidedAudioPacketsPerSecond``. ``end_time``
    defaults to ``start_time`` plus one ``interval_seconds`` per interval.
    """
    if not intervals:
        raise ValueError("a wmequality payload needs at least one interval")
    start = _parse_iso(start_time)
    end = end_time or _iso(start + timedelta(seconds=interval_seconds * len(intervals)))
    body = []
    for k, interval in enumerate(intervals):
        levels = {
            key: _level_value(interval, key, None if "Gain" in key else volume)
            for key in sorted(LEVELS)
        }
        body.append(
            {
                "audioReceive": [],
                "audioTransmit": [
                    {
                        "captureHardwareProvidedAudioPacketsPerSecond": interval.get(
                            "captureHardwareProvidedAudioPacketsPerSecond", packets_per_second
                        ),
                        "common": {"common": {"direction": "sendrecv", "isMain": True}},
                        "levels": levels,
                        "sharedAudioPacketsPerSecond": 0,
                        "streams": [],
                    }
                ],
                "intervalMetadata": {"peripherals": [{"name": "microphone"}]},
                "intervalNumber": interval.get("intervalNumber", first_interval_number + k),
                "videoReceive": [],
                "videoTransmit": [],
            }
        )
    return {
        "event": {
            "canProceed": True,
            "eventData": {"MQ-Event-String": "THIS IS MQ EVENT DATA"},
            "identifiers": {},
            "intervals": body,
            "name": "client.mediaquality.event",
            "sourceMetadata": {
                "applicationSoftwareType": "reallymuted testbed",
                "endTime": end,
                "mediaEngineSoftwareType": "wme",
                "startTime": start_time,
            },
            "trigger": "media-quality",
        },
        # deterministic, so generated test files are byte-identical on every run
        "eventId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"reallymuted:wmequality:{start_time}")),
        "origin": {"name": "endpoint", "userAgent": "reallymuted-testbed"},
        "originTime": {"sent": end, "triggered": end},
        "version": 1,
    }


def gzip_b64(payload: dict[str, Any] | str | bytes) -> str:
    """base64 of a gzip of the payload's compact JSON (mtime 0: the same bytes every time)."""
    if isinstance(payload, dict):
        payload = json.dumps(payload, separators=(",", ":"))
    raw = payload.encode() if isinstance(payload, str) else payload
    return base64.b64encode(gzip.compress(raw, mtime=0)).decode("ascii")


def wrap_entries(blobs: list[str], types: list[str] | None = None) -> dict[str, Any]:
    """The outer wrapper around already encoded ``gzipb64data`` strings."""
    types = types or [TELEMETRY_TYPE] * len(blobs)
    return {
        "telemetrics": [
            {"t": t, "v": {"gzipb64data": b}} for t, b in zip(types, blobs, strict=True)
        ]
    }


def encode_wmequality(
    intervals: list[dict[str, Any]], start_time: str, **payload_options: Any
) -> dict[str, Any]:
    """A complete wrapper record, as Webex posts it, carrying the given intervals.

    ``payload_options`` are those of :func:`wmequality_payload`.
    """
    return wrap_entries([gzip_b64(wmequality_payload(intervals, start_time, **payload_options))])
