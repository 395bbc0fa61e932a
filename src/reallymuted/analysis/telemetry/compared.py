"""Webex's telemetry while muted, from every source side by side.

Three clients' records, each decoded by its own stage:

* ``reference``: the native Webex client's one released ``wmequality`` record
  (``telemetry_reference.csv``: its mute state is not in the record);
* ``testbed-profile``: what the ``webex-2021`` model posted while muted
  (``telemetry_sessions.csv``);
* ``sdk``: what Webex's web media library's own telemetry producers made while muted
  (``sdk_telemetry.csv``: media-quality events and rtcstats dumps).

One row per record (per interval for ``wmequality``): the audio fields it carries and their
values. The formats differ, so nothing is compared number for number; the table shows which
audio-derived fields each client's telemetry has while muted, and what they held.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from reallymuted.io import write_csv

COLUMNS = ["source", "app", "client", "record", "interval", "t", "state", "kind"]
COLUMNS += ["audio_fields", "audio_values"]
# the audio part of a wmequality interval (the gains follow the microphone: PAPER.md T1, T2)
WMEQUALITY_AUDIO = [
    "audio_max_gain",
    "audio_mean_gain",
    "audio_min_gain",
    "audio_max_volume",
    "audio_mean_volume",
    "audio_min_volume",
]


def _wmequality(frame: pd.DataFrame, **fixed: object) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "record": frame["record"],
            "interval": frame["interval"],
            "audio_fields": ", ".join(WMEQUALITY_AUDIO),
            "audio_values": [
                "; ".join(f"{c}={getattr(r, c):g}" for c in WMEQUALITY_AUDIO)
                for r in frame.itertuples()
            ],
            "kind": "wmequality",
        }
    )
    return out.assign(**fixed)


def compared_table(
    reference: pd.DataFrame | None, profile: pd.DataFrame | None, sdk: pd.DataFrame | None
) -> pd.DataFrame:
    """The muted records of each source present (a source whose stage is off adds nothing)."""
    parts = []
    if reference is not None and not reference.empty:
        parts.append(
            _wmequality(
                reference,
                source=reference["source"],
                app="webex",
                client="Webex native client (the authors' released record)",
                t=float("nan"),
                state="not in the record",
            )
        )
    if profile is not None and not profile.empty:
        muted = profile[profile.state == "muted"]
        parts.append(
            _wmequality(
                muted,
                source=muted["source"],
                app=muted["app"],
                client="model " + muted["app"] + " (not the app)",
                t=muted["t"],
                state="muted",
            )
        )
    if sdk is not None and not sdk.empty:
        muted = sdk[(sdk.state == "muted") & sdk.kind.isin(["mediaquality", "rtcstats"])]
        parts.append(
            pd.DataFrame(
                {
                    "source": muted["source"],
                    "app": muted["app"],
                    "client": muted["client_code"],
                    "record": muted.groupby("app").cumcount() + 1,
                    "interval": pd.NA,
                    "t": muted["t"],
                    "state": "muted",
                    "kind": muted["kind"],
                    "audio_fields": muted["audio_field_names"].fillna("").replace("", "none"),
                    "audio_values": muted["audio_values"].fillna("").replace("", "none"),
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(parts, ignore_index=True)[COLUMNS]


def write_compared(
    reference_path: str | Path | None,
    profile_path: str | Path | None,
    sdk_path: str | Path | None,
    out: str | Path,
) -> None:
    def read(path: str | Path | None) -> pd.DataFrame | None:
        return pd.read_csv(path) if path else None

    write_csv(out, compared_table(read(reference_path), read(profile_path), read(sdk_path)))
