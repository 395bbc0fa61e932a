"""The vendors' own client libraries (``source`` sdk / sdk-preview): what each did on mute.

Read from a session's raw evidence only: the manifest (which packages ran, ``client_code``),
the events the page harness logged (every getUserMedia call, every microphone track opened,
every change to a track with the script that made it, each track's state), and the
collector's log (what the SDK's telemetry producers made, and every request the page kept
from leaving). Two tables:

* ``sdk_sessions.csv``, a row per session: the microphone tracks the SDK opened, what its mute
  and unmute did to them and who did it, the tracks' states while muted, the requests it
  tried, its telemetry records; beside the muted read share at both witnesses and the RTP
  sent while muted, from the session tables;
* ``sdk_telemetry.csv``, a row per record the SDK produced (posted by the page where the
  vendor's upper layer would upload it): its time, mute state, kind, size, its fields, and
  every audio-level or energy field with its value, and whether a level (not a running
  total) was non-zero and how much a running total grew. rtcstats dumps are delta-compressed;
  each is read against the dumps before it, so the values are those the SDK reported then.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from reallymuted.analysis import evidence
from reallymuted.analysis.evidence import DataError, driver_keys, label_states, session_keys
from reallymuted.io import read_jsonl, write_csv, write_json

# Fields whose value follows the microphone's level (WebRTC stats and the SDKs' own names).
AUDIO_FIELD = re.compile(r"audiolevel|audioenergy|energy|volume|\blevel\b|micscore", re.I)
MUTING = ("track_enabled", "track_stop", "replace_track")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": [1]}}`` -> ``{"a.b[0]": 1}``: every leaf of a JSON record by its path.

    A string holding JSON is read as JSON too: rtcstats dumps carry their stats that way."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {prefix: value}
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list):
        out = {}
        for i, inner in enumerate(value):
            out.update(flatten(inner, f"{prefix}[{_report_id(inner) or i}]"))
        return out
    return {prefix: value}


def _report_id(value: Any) -> str | None:
    """A WebRTC stats report's ``id`` (e.g. ``SA1``, the media source): rtcstats lists only the
    reports that changed, so a report is named by its id, not by its place in the list."""
    if isinstance(value, str) and value[:1] == "{":
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return str(value["id"]) if isinstance(value, dict) and "id" in value else None


def _generic(path: str) -> str:
    """A field's path without list indices: the same field in every element."""
    return re.sub(r"\[\d+\]", "[]", path)


def describe_operations(operations: list[dict[str, Any]]) -> str:
    """What a call did to the microphone tracks, e.g. ``a1 enabled=false by /vendor/x.js``."""
    done = []
    for op in operations:
        if op["event"] not in MUTING and op["event"] != "gum":
            continue
        what = {
            "track_enabled": f"{op.get('track')} enabled={str(op.get('value')).lower()}",
            "track_stop": f"{op.get('track')} stopped",
            "replace_track": f"sender track {op.get('from') or 'none'} -> {op.get('to') or 'none'}",
            "gum": "getUserMedia",
        }[op["event"]]
        plumbing = " [harness plumbing]" if op.get("plumbing") else ""
        done.append(f"{what} by {op.get('caller')}{plumbing}")
    return "; ".join(done) or "no track changed"


def describe_tracks(tracks: list[dict[str, Any]]) -> str:
    return (
        "; ".join(
            f"{t['track']} {t['readyState']}, enabled={str(t['enabled']).lower()}" for t in tracks
        )
        or "no track"
    )


def session_row(session_dir: str | Path) -> dict[str, Any]:
    """One sdk session: its SDK, tracks, what mute did, requests and telemetry counts."""
    folder = Path(session_dir)
    manifest = evidence.load_manifest(folder)
    code = manifest.get("client_code") or {}
    if "sdk" not in code:
        raise DataError(f"{folder}: not an sdk session (no client_code.sdk in its manifest)")
    events = read_jsonl(folder / "events.jsonl")
    segments = evidence.mute_segments(events)
    calls = {e["event"]: e for e in events if e["event"] in ("join", "mute", "unmute")}
    opened = [e for e in events if e["event"] == "page_track_opened"]
    muted_t = pd.Series([e["t"] for e in events])
    states = label_states(muted_t, segments)
    in_muted = {i for i, s in states.items() if s == "muted"}
    scores = [
        e["score"] for i, e in enumerate(events) if e["event"] == "page_mic_score" and i in in_muted
    ]
    requests = [e for e in events if e["event"] == "page_request"]
    records = telemetry_rows(folder, manifest, segments)
    muted_records = [r for r in records if r["state"] == "muted"]
    mute, unmute = calls.get("mute", {}), calls.get("unmute", {})
    return {
        **session_keys(manifest),
        **driver_keys(manifest),
        "sdk": code["sdk"],
        "transport": (calls.get("join") or {}).get("transport"),
        "gum_calls": sum(e["event"] == "page_gum" for e in events),
        "mic_tracks_opened": sum(e.get("how") == "getUserMedia" for e in opened),
        "tracks_cloned": sum(e.get("how") == "clone" for e in opened),
        "mute_did": describe_operations(mute.get("operations", [])),
        "mute_by_vendor": mute.get("by_vendor"),
        "mute_left_track_untouched": mute.get("track_untouched"),
        "tracks_while_muted": describe_tracks(mute.get("tracks", [])),
        "sdk_state_muted": json.dumps(mute.get("sdk_state"), sort_keys=True),
        "unmute_did": describe_operations(unmute.get("operations", [])),
        "tracks_after_unmute": describe_tracks(unmute.get("tracks", [])),
        "mic_scores_muted": len(scores),
        "mic_score_muted_median": float(pd.Series(scores).median()) if scores else math.nan,
        "requests_kept_local": len(requests),
        "request_hosts": ", ".join(sorted({_host(r["url"]) for r in requests})) or "none",
        "telemetry_records": len(records),
        "telemetry_records_muted": len(muted_records),
        "telemetry_records_muted_with_audio_fields": sum(
            r["audio_fields"] > 0 for r in muted_records
        ),
        "telemetry_records_muted_with_level": sum(r["level_nonzero"] for r in muted_records),
        "telemetry_energy_grew_while_muted": sum(
            r["total_growth"] > 0 and r["total_growth_within_state"] for r in muted_records
        ),
    }


def _host(url: str) -> str:
    match = re.match(r"^[a-z]+://([^/:?#]+)", url)
    return match.group(1) if match else url


def telemetry_rows(
    folder: Path, manifest: dict[str, Any], segments: list[evidence.Segment]
) -> list[dict[str, Any]]:
    """Every record the page posted for the SDK's telemetry producers (``/sdk/KIND``) and every
    request it kept from leaving (``/intercepted/KIND``), decoded, with its mute state."""
    log_path = folder / "collector.jsonl"
    if not log_path.is_file():
        return []
    rows = []
    keys = {**session_keys(manifest), "client_code": driver_keys(manifest)["client_code"]}
    # rtcstats dumps are delta-compressed: a report or field left out did not change since the
    # dump before. Each dump is read against everything seen so far, so a level it leaves out
    # is the level it still reports, and a running total's change is known per dump.
    seen: dict[str, dict[str, Any]] = {}
    previous_state: dict[str, str] = {}
    for entry in evidence.read_log(log_path):
        if entry.get("event") != "request":
            continue
        path = str(entry.get("path", ""))
        kind = path.split("?", 1)[0].strip("/").replace("/", ":")
        if not kind.startswith(("sdk:", "intercepted:")):
            continue
        state = label_states(pd.Series([entry["t"]]), segments).iloc[0]
        body = evidence.request_body(entry)
        try:
            record = json.loads(body) if body else None
        except json.JSONDecodeError:
            record = None
        leaves = flatten(record) if isinstance(record, dict | list) else {}
        name = kind
        if isinstance(record, dict) and kind == "sdk:rtcstats":
            name = f"{kind}:{record.get('name')}"
        before = dict(seen.get(name, {}))
        current = {**before, **leaves} if kind == "sdk:rtcstats" else leaves
        seen[name] = current
        audio = {
            path_: value
            for path_, value in current.items()
            if AUDIO_FIELD.search(path_.rsplit(".", 1)[-1])
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        }
        # A level is instantaneous; a total* field (totalAudioEnergy) only ever grows, so a
        # non-zero total says nothing about the interval: its growth since the dump before does.
        totals = {k for k in audio if k.rsplit(".", 1)[-1].startswith("total")}
        levels = {k: v for k, v in audio.items() if k not in totals}
        known = [k for k in totals if isinstance(before.get(k), float | int)]
        growth = sum(audio[k] - before[k] for k in known) if known else math.nan
        rows.append(
            {
                **keys,
                "t": entry["t"],
                "state": state,
                "kind": kind.removeprefix("sdk:"),
                "bytes": entry.get("bytes"),
                "fields": len(leaves),
                "field_names": ", ".join(sorted({_generic(p) for p in leaves})),
                "audio_fields": len(audio),
                "audio_field_names": ", ".join(sorted({_generic(p) for p in audio})),
                "audio_values": "; ".join(f"{k}={v:.6g}" for k, v in sorted(audio.items())),
                "level_nonzero": any(levels.values()),
                "level_max": max(levels.values()) if levels else math.nan,
                "total_growth": growth,
                # a growth measured from a dump taken in the same state (else it spans a change)
                "total_growth_within_state": previous_state.get(name) == state,
            }
        )
        previous_state[name] = state
    return rows


def sdk_tables(
    session_dirs: list[str | Path], policy: pd.DataFrame, states: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(sessions, telemetry): a row per sdk session, with its read shares and muted RTP, and
    a row per record its SDK produced."""
    rows, records = [], []
    for folder in session_dirs:
        rows.append(session_row(folder))
        manifest = evidence.load_manifest(folder)
        segments = evidence.mute_segments(read_jsonl(Path(folder) / "events.jsonl"))
        records += telemetry_rows(Path(folder), manifest, segments)
    sessions = pd.DataFrame(rows)
    keys = ["source", "app", "mute_mode", "stimulus", "rep", "condition"]
    if not sessions.empty:
        # the policy table is per app and mode (its shares over that mode's sessions)
        per_mode = ["source", "app", "mute_mode"]
        shares = policy[[*per_mode, "muted_read_share_os", "muted_read_share_app"]]
        sessions = sessions.merge(shares, on=per_mode, how="left")
        muted = states[states.state == "muted"]
        sent = [c for c in ("rtp_packets_per_s", "audio_level_median_dbov") if c in muted]
        sessions = sessions.merge(
            muted[[*keys, *sent]].rename(columns={c: f"muted_{c}" for c in sent}),
            on=keys,
            how="left",
        )
    return sessions, pd.DataFrame(records)


def write_tables(
    session_dirs: list[str],
    policy_path: str | Path,
    states_path: str | Path,
    out: dict[str, str | Path],
) -> None:
    sessions, records = sdk_tables(session_dirs, pd.read_csv(policy_path), pd.read_csv(states_path))
    write_csv(out["sessions"], sessions)
    write_csv(out["telemetry"], records)
    write_json(out["values"], sdk_values(sessions))


def sdk_values(sessions: pd.DataFrame) -> dict[str, Any]:
    """The claims table's values of the sdk sessions, per app and mode, each with its source."""
    values: dict[str, Any] = {
        "source": evidence.source_label(sessions.get("source", [])),
        "apps": sorted(set(sessions.get("app", []))),
    }
    source_of = {}
    for row in sessions.itertuples():
        key = evidence.value_key(row.app, row.mute_mode)
        per_session = {
            "client_code": row.client_code,
            "mic_tracks_opened": int(row.mic_tracks_opened),
            "mute_did": row.mute_did,
            "tracks_while_muted": row.tracks_while_muted,
            "muted_read_share_os": float(row.muted_read_share_os),
            "telemetry_records_muted": int(row.telemetry_records_muted),
            "telemetry_records_muted_with_audio_fields": int(
                row.telemetry_records_muted_with_audio_fields
            ),
            "telemetry_records_muted_with_level": int(row.telemetry_records_muted_with_level),
            "telemetry_energy_grew_while_muted": int(row.telemetry_energy_grew_while_muted),
        }
        for name, value in per_session.items():
            values[f"{key}_{name}"] = value
            source_of[f"{key}_{name}"] = row.source
    values["source_of"] = source_of
    return values
