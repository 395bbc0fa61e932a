"""The guard figure: per client, what the app received while muted, guard off and on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reallymuted.figures import PALETTE, plt, save, source_footer

FLOOR_DB = -120.0  # where a read of digital zeros is drawn (its RMS has no dB value)


def plot_guard(table: pd.DataFrame, outputs: list[str | Path]) -> None:
    """Two panels per client × mute mode (stimuli pooled): the mean RMS of the app's reads
    while muted (guard on: from the guard's answer to the unmute; dBFS, zeros drawn at the
    floor and marked), and the share of the muted time the app was reading, guard off and on."""
    # guard on: from the guard's answer on (the muted state's first tens of ms precede it)
    rms = table.app_rms_mean.where(table.guard == "off", table.app_rms_after_os_mute)
    pooled = (
        table.assign(rms=rms)
        .groupby(["client", "mute_mode", "guard"], sort=True)
        .agg(app_rms_mean=("rms", "mean"), app_read_share=("app_read_share", "mean"))
        .reset_index()
    )
    labels = sorted({(r.client, r.mute_mode) for r in pooled.itertuples()})
    fig, (level, share) = plt.subplots(1, 2, figsize=(10, 0.6 * len(labels) + 2.2), sharey=True)
    y = np.arange(len(labels))
    for offset, (guard, colour) in enumerate((("off", PALETTE[3]), ("on", PALETTE[2]))):
        rows = pooled[pooled.guard == guard].set_index(["client", "mute_mode"])
        rms = np.array([rows.app_rms_mean.get(k, np.nan) for k in labels], dtype=float)
        reading = np.array([rows.app_read_share.get(k, np.nan) for k in labels], dtype=float)
        db = np.where(rms > 0, 20 * np.log10(np.where(rms > 0, rms, 1)), FLOOR_DB)
        db = np.where(np.isnan(rms), np.nan, db)
        yy = y + (offset - 0.5) * 0.38
        level.barh(yy, db - FLOOR_DB, left=FLOOR_DB, height=0.36, color=colour,
                   label=f"guard {guard}")  # fmt: skip
        share.barh(yy, reading, height=0.36, color=colour, label=f"guard {guard}")
        for yi, value in zip(yy, rms, strict=True):
            if value == 0:
                level.text(FLOOR_DB + 2, yi, "0: digital silence", va="center", fontsize=8)
    level.set_yticks(y, [f"{client} ({mode})" for client, mode in labels])
    level.invert_yaxis()
    level.set_xlim(FLOOR_DB, 0)
    level.set_xlabel("RMS of the app's reads while muted (dBFS; guard on: once it answered)")
    level.legend(loc="lower right", fontsize=8, frameon=False)
    share.set_xlim(0, 1.05)
    share.set_xlabel("share of the muted time the app read the microphone")
    fig.suptitle("The OS-level mute: what the app received while muted")
    source_footer(
        fig, table.source, "guard on: reallymuted guard muted the client's capture streams at "
        "the session's PulseAudio (from each session's manifest)",
    )  # fmt: skip
    fig.tight_layout()
    save(fig, outputs)
