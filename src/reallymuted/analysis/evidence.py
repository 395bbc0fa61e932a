"""Reading a session's evidence: its manifest, its mute timeline, the keys of its rows.

What every analysis of a session starts from (the evidence contract, docs/evidence.md):
:func:`load_manifest`, the mute segments of ``events.jsonl`` (:func:`mute_segments`), the
keys every per-session row carries (:func:`session_keys`), the collector's log of a testbed
profile (:func:`read_log`), and how a set of rows states its sources (:func:`source_label`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reallymuted.io import DataError
from reallymuted.paths import MANIFEST


@dataclass(frozen=True)
class Segment:
    state: str  # "unmuted" | "muted"
    start: float
    end: float


def mute_segments(events: list[dict[str, Any]]) -> list[Segment]:
    """The joined part of a session cut into unmuted/muted segments, from ``events.jsonl``."""
    joined = [e["t"] for e in events if e["event"] == "join"]
    left = [e["t"] for e in events if e["event"] == "leave"]
    if not joined or not left:
        raise DataError("events: a session needs a 'join' and a 'leave' event")
    segments, state, start = [], "unmuted", joined[0]
    for event in sorted(events, key=lambda e: e["t"]):
        if event["t"] <= joined[0] or event["t"] >= left[-1]:
            continue
        new_state = {"mute": "muted", "unmute": "unmuted"}.get(event["event"])
        if new_state and new_state != state:
            segments.append(Segment(state, start, event["t"]))
            state, start = new_state, event["t"]
    segments.append(Segment(state, start, left[-1]))
    return [s for s in segments if s.end > s.start]


def label_states(times: pd.Series, segments: list[Segment]) -> pd.Series:
    """The mute state at each time (``outside`` before join and after leave)."""
    state = pd.Series("outside", index=times.index, dtype=object)
    for segment in segments:
        state[(times >= segment.start) & (times < segment.end)] = segment.state
    return state


def load_manifest(session_dir: str | Path) -> dict[str, Any]:
    path = Path(session_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable manifest ({exc})") from None


# -- the keys of a session's rows -------------------------------------------------------------

SESSION_KEYS = ["source", "app", "mute_mode", "stimulus", "rep", "condition"]


def session_keys(manifest: dict) -> dict[str, object]:
    return {
        "source": manifest.get("source", "testbed"),
        "app": manifest["app"],
        "mute_mode": manifest["mode"],
        "stimulus": manifest.get("stimulus", {}).get("name", ""),
        "rep": int(manifest["rep"]),
        "condition": manifest["condition"],
    }


DRIVER_KEYS = ["driver", "registry_app", "client_code", "client_scope", "guard"]


def driver_keys(manifest: dict) -> dict[str, str]:
    """The driver and, for native, web and sdk drivers, the registry app the session ran: config
    names such as ``zoom-windows`` are the user's, the registry id (``zoom``) is what the
    per-app tables look sessions up by. ``client_code`` names the vendor packages an ``sdk``
    session ran, with their versions, and ``client_scope`` which part of the vendor's product
    they are ("" for every other client). ``guard`` says whether ``reallymuted guard`` muted
    its streams at the OS while it was muted (manifests before the guard existed: no)."""
    code = manifest.get("client_code") or {}
    registry_app = (manifest.get("options") or {}).get("registry_app") or code.get("registry_app")
    packages = "; ".join(f"{p['name']} {p['version']}" for p in code.get("packages", []))
    return {
        "driver": str(manifest.get("driver", "")),
        "registry_app": str(registry_app or ""),
        "client_code": packages,
        "client_scope": str(code.get("scope") or ""),
        "guard": "on" if manifest.get("guard") else "off",
    }


def value_key(*parts: object) -> str:
    """A claims-table key: lowercase letters, digits and underscores only."""
    return "_".join(str(p) for p in parts).replace("-", "_").lower()


def source_label(sources: Iterable[object]) -> str:
    """The sources of a set of rows, as every source statement says them: distinct, sorted,
    comma-separated ("testbed, testbed-profile"); "none" for no rows."""
    return ", ".join(sorted({str(s) for s in sources if pd.notna(s)})) or "none"


# -- the OS-level mute of a guarded session ---------------------------------------------------


def os_mute_stats(reads: pd.DataFrame, events: list[dict[str, Any]]) -> dict[str, float]:
    """A guarded session (``reallymuted guard``, docs/guard.md), while muted: how long the OS
    mute took (the mute event to the guard's answer) and what the app read once the guard had
    answered, to one read period before the unmute (its reads' mean RMS and how many were not
    all zeros). Empty without the guard."""
    ordered = sorted(events, key=lambda e: e["t"])
    spans, delays = [], []
    for i, event in enumerate(ordered):
        guard = event.get("guard")
        if event["event"] != "mute" or not isinstance(guard, dict):
            continue
        end = next((e["t"] for e in ordered[i + 1 :] if e["event"] in ("unmute", "leave")), None)
        if end is not None:
            spans.append((float(guard["applied_t"]), float(end)))
            delays.append(1000 * (float(guard["applied_t"]) - float(event["t"])))
    if not spans:
        return {}
    app = reads[reads.witness == "app"].sort_values("t", kind="stable")
    # A capture stream hands out its samples in order: a read returns those that follow the
    # previous read's, so the first read after the guard's answer returns samples captured
    # before it (all of them since the previous read, when the app had paused). A read counts
    # from the one whose previous read came after the answer. A read is stamped when it is
    # made and may block across the unmute: those within a read period of it are left out.
    before = app.t.shift(1)
    period = float(np.median(np.diff(app.t.to_numpy()))) if len(app) > 1 else 0.0
    inside = pd.concat([app[(before >= a) & (app.t < b - period)] for a, b in spans])
    return {
        "os_mute_delay_ms": float(np.median(delays)),
        "app_reads_after_os_mute": float(len(inside)),
        "app_rms_after_os_mute": float(inside.rms.mean()) if len(inside) else np.nan,
        "app_sounding_reads_after_os_mute": float((inside.rms.fillna(0) > 0).sum()),
    }


# -- a testbed profile's collector log -------------------------------------------------------


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Every line of a collector log, each with its 1-based ``line`` number added."""
    rows = []
    with Path(path).open() as fh:
        for number, text in enumerate(fh, 1):
            if text.strip():
                rows.append({**json.loads(text), "line": number})
    return rows


def request_body(row: dict[str, Any]) -> bytes:
    """The body of a logged request, as the collector received it."""
    if "body_b64" in row:
        return base64.b64decode(row["body_b64"])
    return str(row.get("body", "")).encode("utf-8")
