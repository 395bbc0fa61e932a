"""What two runs of the same study matrix measured, session by session: whether running
sessions side by side changed anything the study measures.

Per session: the paced feeder's lateness and the bytes the sound server refused (the OS
witness's lines in ``mic_trace.jsonl``), the tracer's attach failures (``trace_error``
events) and failed attempts, and the per-session policy labels at both witnesses
(``policy.json``); per app and mute mode, the study's labels (``mic_policy.csv``); and every
named value the study computed (``results/values/*.json``: the attack's accuracies among them),
which the feeder's timing could move even where no label changes.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from reallymuted.paths import MANIFEST, RAW, SESSIONS, VALUES
from reallymuted.testbed.audio import OS_API


def session_measures(raw: Path) -> dict[str, Any]:
    """The instrument's health in one session's raw evidence. Refused bytes are counted from
    join to leave: before the join they measure how long the client took to start."""
    errors, edges = [], {}
    with (raw / "events.jsonl").open() as fh:
        for line in fh:
            event = json.loads(line)
            if event.get("event") == "trace_error":  # which process, and Frida's words
                errors.append(f"{event.get('comm', '?')}: {event.get('error', '?')}")
            if event.get("event") in ("join", "leave"):
                edges.setdefault(event["event"], float(event["t"]))
    late, refused, ticks = [], 0, 0
    with (raw / "mic_trace.jsonl").open() as fh:
        for line in fh:
            row = json.loads(line)
            if row.get("api") == OS_API:
                ticks += 1
                late.append(float(row.get("late_ms") or 0.0))
                if edges.get("join", 0.0) <= row["t"] < edges.get("leave", float("inf")):
                    refused += int(row.get("dropped") or 0)
    manifest = json.loads((raw / MANIFEST).read_text())
    late.sort()
    return {
        "ticks": ticks,
        "late_ms_p99": late[int(0.99 * (len(late) - 1))] if late else None,
        "late_ms_max": late[-1] if late else None,
        "refused_bytes_join_to_leave": refused,
        "trace_errors": len(errors),
        "trace_error_texts": errors,
        "failed_attempts": len(manifest.get("failed_attempts") or []),
        "wall_s": (manifest.get("supervisor") or {}).get("wall_s"),
    }


def _policies(workdir: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((workdir / SESSIONS).glob("*/*/*/policy.json")):
        data = json.loads(path.read_text())
        key = str(path.parent.relative_to(workdir / SESSIONS))
        found[key] = {k: data.get(k) for k in ("policy_os", "policy_app", "witnesses_agree")}
    return found


def _study_labels(workdir: Path) -> dict[tuple[str, str], dict[str, str]]:
    path = workdir / "results/tables/mic_policy.csv"
    if not path.is_file():
        return {}
    with path.open() as fh:
        return {(r["app"], r["mute_mode"]): r for r in csv.DictReader(fh)}


def named_values(workdir: Path) -> dict[str, Any]:
    """Every scalar of the study's named values, as ``file:key.key[i]`` -> value."""
    found: dict[str, Any] = {}

    def walk(value: Any, name: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{name}.{key}" if not name.endswith(":") else f"{name}{key}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{name}[{i}]")
        else:
            found[name] = value

    for path in sorted((workdir / VALUES).glob("*.json")):
        walk(json.loads(path.read_text()), f"{path.name}:")
    return found


def value_changes(baseline: dict[str, Any], measured: dict[str, Any]) -> list[dict[str, Any]]:
    """The named values that differ between two runs (or that only one run has), with the
    relative change of numbers."""
    changes = []
    for name in sorted(baseline.keys() | measured.keys()):
        old, new = baseline.get(name), measured.get(name)
        if name in baseline and name in measured and old == new:
            continue
        change: dict[str, Any] = {"name": name, "baseline": old, "measured": new}
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (old, new))
        if numbers and old:
            change["relative"] = round((new - old) / abs(old), 4)
        changes.append(change)
    return changes


def compare_runs(baseline: Path, measured: Path) -> dict[str, Any]:
    """Session by session, what ``measured`` recorded beside ``baseline`` (two working
    directories that ran the same matrix)."""
    sessions = {}
    for manifest in sorted((baseline / RAW).glob(f"*/*/*/{MANIFEST}")):
        key = str(manifest.parent.relative_to(baseline / RAW))
        other = measured / RAW / key
        if not (other / MANIFEST).is_file():
            sessions[key] = {"missing_in_measured": True}
            continue
        sessions[key] = {
            "baseline": session_measures(manifest.parent),
            "measured": session_measures(other),
        }
    policies = {"baseline": _policies(baseline), "measured": _policies(measured)}
    label_changes = [
        {"session": key, "baseline": policies["baseline"][key], "measured": label}
        for key, label in sorted(policies["measured"].items())
        if key in policies["baseline"] and policies["baseline"][key] != label
    ]
    labels = {"baseline": _study_labels(baseline), "measured": _study_labels(measured)}
    study_changes = [
        {
            "app": app,
            "mute_mode": mode,
            "baseline": labels["baseline"].get((app, mode), {}),
            "measured": row,
        }
        for (app, mode), row in sorted(labels["measured"].items())
        if {
            k: labels["baseline"].get((app, mode), {}).get(k) for k in ("policy", "witnesses_agree")
        }
        != {k: row.get(k) for k in ("policy", "witnesses_agree")}
    ]
    paired = [s for s in sessions.values() if "baseline" in s]
    values = {"baseline": named_values(baseline), "measured": named_values(measured)}
    changed_values = value_changes(values["baseline"], values["measured"])

    def total(run: str, key: str) -> float:
        return sum(s[run][key] or 0 for s in paired)

    def worst(run: str, key: str) -> float | None:
        values = [s[run][key] for s in paired if s[run][key] is not None]
        return max(values) if values else None

    summary = {
        "sessions_compared": len(paired),
        "sessions_missing": len(sessions) - len(paired),
        **{
            f"{key}_{run}": fn(run, key)
            for run in ("baseline", "measured")
            for key, fn in (
                ("late_ms_p99", worst),
                ("late_ms_max", worst),
                ("refused_bytes_join_to_leave", total),
                ("trace_errors", total),
                ("failed_attempts", total),
            )
        },
        "session_label_changes": len(label_changes),
        "study_label_changes": len(study_changes),
        "study_labels_compared": len(labels["measured"]),
        "named_values_compared": len(values["baseline"].keys() | values["measured"].keys()),
        "named_values_changed": len(changed_values),
    }
    return {
        "summary": summary,
        "labels_identical": not label_changes
        and not study_changes
        and bool(labels["measured"])
        and len(sessions) == len(paired),
        "session_label_changes": label_changes,
        "study_label_changes": study_changes,
        "named_value_changes": changed_values,
        "sessions": sessions,
    }


def beside_yardstick(measured: dict[str, Any], yardstick: dict[str, Any]) -> dict[str, Any]:
    """Two comparisons with the same baseline run, e.g. parallel against serial and serial
    again against serial: which named values moved in one, the other or both, and by how much
    (the median of the absolute relative changes of numbers)."""

    def moved(comparison: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {change["name"]: change for change in comparison["named_value_changes"]}

    def median_relative(changes: list[dict[str, Any]]) -> float | None:
        sizes = sorted(abs(c["relative"]) for c in changes if "relative" in c)
        return sizes[len(sizes) // 2] if sizes else None

    ours, theirs = moved(measured), moved(yardstick)
    return {
        "named_values_moved": len(ours),
        "named_values_moved_yardstick": len(theirs),
        "moved_in_both": len(ours.keys() & theirs.keys()),
        "moved_only_here": sorted(ours.keys() - theirs.keys()),
        "moved_only_in_yardstick": len(theirs.keys() - ours.keys()),
        "median_abs_relative_change": median_relative(list(ours.values())),
        "median_abs_relative_change_yardstick": median_relative(list(theirs.values())),
    }
