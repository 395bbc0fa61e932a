"""The OS-level mute beside the app's own (issue 15): each guarded client next to its twin.

A guarded app of the study (``guard: true`` in its ``sessions.apps`` entry) runs the same
client, options, stimuli and schedule as its twin, with ``reallymuted guard`` muting its
capture streams at the session's PulseAudio while the schedule mutes it (docs/guard.md). Its
sessions say so in their manifests (``guard``), and that, not the config, fills the table's
``guard`` column: a guarded app whose evidence says otherwise is an error.

Per client, mute mode and stimulus, guard off and on, while muted: what the app-side witness
(Frida in the client) saw it read (read share, mean RMS of its reads), what the OS witness saw
the microphone do (read share of the pipe source), and what left in RTP. Those cover the whole
muted state, whose first tens of milliseconds precede the guard's answer; the verdict of a
guarded row covers the app's reads from that answer (the OS mute applied) to the unmute,
less the first read after the answer (it returns samples captured before it: a capture
stream hands them out in order) and the reads within a read period of the unmute:
``digital silence`` when every read the app made then carried zeros, ``no reads`` when it made
none, else ``sound reached the app``. ``os_mute_delay_ms`` is how long the answer took.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reallymuted.analysis.evidence import source_label, value_key
from reallymuted.io import DataError, write_csv, write_json

MEASURES = [
    "app_read_share",
    "app_rms_mean",
    "os_read_share",
    "packets_per_s",
    "rtp_bytes_per_s",
    "audio_level_median_dbov",
    "payload_rms_mean",
]
COLUMNS = [
    "client",
    "app",
    "guard",
    "source",
    "driver",
    "mute_mode",
    "stimulus",
    "sessions",
    *MEASURES,
    "app_rms_max",
    "os_mute_delay_ms",
    "app_reads_after_os_mute",
    "app_rms_after_os_mute",
    "app_sounding_reads_after_os_mute",
    "verdict",
]


def _verdict(guard: str, rows: pd.DataFrame) -> str:
    """From the guard's answer on (the OS mute applied) to the unmute."""
    if guard != "on":
        return ""
    if rows.app_reads_after_os_mute.fillna(0).sum() == 0:
        return "no reads"
    sounding = rows.app_sounding_reads_after_os_mute.fillna(0).sum()
    return "digital silence" if sounding == 0 else "sound reached the app"


def guard_table(states: pd.DataFrame, twins: Mapping[str, str]) -> pd.DataFrame:
    """One row per client × guard × mute mode × stimulus, from ``session_states.csv``;
    ``twins`` maps each guarded app to its unguarded twin."""
    if "guard" not in states:
        raise DataError("session states have no guard column (made before the guard existed)")
    muted = states[states.state == "muted"]
    rows = []
    for guarded, bare in sorted(twins.items()):
        for app, expected in ((bare, "off"), (guarded, "on")):
            sessions = muted[muted.app == app]
            if sessions.empty:
                raise DataError(f"{app}: no muted session in the session states (twin of "
                                f"{guarded if app == bare else bare})")  # fmt: skip
            found = set(sessions.guard.astype(str))
            if found - {expected}:
                raise DataError(
                    f"{app}: its sessions say guard {sorted(found)}, the study says {expected}"
                )
            for (mode, stimulus), group in sessions.groupby(["mute_mode", "stimulus"], sort=True):
                rows.append(
                    {
                        "client": bare,
                        "app": app,
                        "guard": expected,
                        "source": source_label(group.source),
                        "driver": ", ".join(sorted(set(group.driver.astype(str)))),
                        "mute_mode": mode,
                        "stimulus": stimulus,
                        "sessions": len(group),
                        **{m: group[m].mean() if m in group else np.nan for m in MEASURES},
                        "app_rms_max": group.app_rms_mean.max(),
                        "os_mute_delay_ms": group.get("os_mute_delay_ms", pd.Series()).median(),
                        "app_reads_after_os_mute": group.get(
                            "app_reads_after_os_mute", pd.Series()
                        ).sum(min_count=1),
                        "app_rms_after_os_mute": group.get(
                            "app_rms_after_os_mute", pd.Series()
                        ).mean(),
                        "app_sounding_reads_after_os_mute": group.get(
                            "app_sounding_reads_after_os_mute", pd.Series()
                        ).sum(min_count=1),
                        "verdict": _verdict(expected, group),
                    }
                )
    return pd.DataFrame(rows, columns=COLUMNS)


def guard_values(table: pd.DataFrame) -> dict[str, Any]:
    """The verdicts and RMS while muted, for the report and the findings, with their source."""
    values: dict[str, Any] = {"source": source_label(table.source)}
    source_of: dict[str, str] = {}  # clients, models of apps and vendors' libraries side by side
    for row in table.itertuples():
        key = value_key("guard", row.guard, row.client, row.mute_mode, row.stimulus)
        values[f"{key}_app_rms_mean"] = row.app_rms_mean
        source_of[f"{key}_app_rms_mean"] = str(row.source)
        if row.guard == "on":
            values[f"{key}_verdict"] = row.verdict
            source_of[f"{key}_verdict"] = str(row.source)
    guarded = table[table.guard == "on"]
    values["guarded_clients"] = sorted(set(guarded.client))
    values["all_silent"] = bool(len(guarded)) and bool(
        guarded.verdict.isin(["digital silence", "no reads"]).all()
    )
    values["source_of"] = source_of
    return values


def write_guard_tables(
    states_csv: str | Path, twins: Mapping[str, str], outputs: Mapping[str, str]
) -> pd.DataFrame:
    """guard.csv and guard.json from the session states; returns the table (to draw)."""
    table = guard_table(pd.read_csv(states_csv), twins)
    write_csv(outputs["table"], table)
    write_json(outputs["values"], guard_values(table))
    return table
