"""Session timelines: mute state, microphone reads at both witnesses, packets, levels."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from reallymuted.analysis.evidence import Segment
from reallymuted.figures import PALETTE, save, source_footer

BIN_S = 0.5
SUB_BIN_S = 0.05


def _edges(end: float) -> np.ndarray:
    return np.arange(0.0, end + BIN_S, BIN_S)


def os_share(reads: pd.DataFrame, edges: np.ndarray) -> np.ndarray:
    """Per bin: bytes the OS source accepted / bytes offered (1 = read in real time)."""
    rows = reads[reads.witness == "os"]
    accepted, _ = np.histogram(rows.t, bins=edges, weights=rows["bytes"].fillna(0))
    dropped, _ = np.histogram(rows.t, bins=edges, weights=rows["dropped"].fillna(0))
    offered = accepted + dropped
    return np.divide(accepted, offered, out=np.full(len(accepted), np.nan), where=offered > 0)


def app_share(reads: pd.DataFrame, edges: np.ndarray) -> np.ndarray:
    """Per bin: share of 50 ms sub-intervals with at least one intercepted read."""
    fine = np.arange(edges[0], edges[-1] + SUB_BIN_S / 2, SUB_BIN_S)
    counts, _ = np.histogram(reads[reads.witness == "app"].t, bins=fine)
    owner = np.minimum(((fine[:-1] - edges[0]) // BIN_S).astype(int), len(edges) - 2)
    active = np.bincount(owner, weights=(counts > 0).astype(float), minlength=len(edges) - 1)
    total = np.bincount(owner, minlength=len(edges) - 1)
    return np.divide(active, total, out=np.full(len(total), np.nan), where=total > 0)


def _binned_median(times: pd.Series, values: pd.Series, edges: np.ndarray) -> np.ndarray:
    index = np.digitize(times, edges) - 1
    frame = pd.DataFrame({"bin": index, "value": values}).dropna()
    medians = frame.groupby("bin").value.median()
    out = np.full(len(edges) - 1, np.nan)
    valid = medians.index[(medians.index >= 0) & (medians.index < len(out))]
    out[valid] = medians[valid]
    return out


def plot_timeline(
    packets: pd.DataFrame,
    reads: pd.DataFrame,
    segments: list[Segment],
    title: str,
    source: str,
    outputs: list[str | Path],
) -> None:
    end = max([s.end for s in segments] + [float(reads.t.max() if len(reads) else 0)]) + 0.5
    edges = _edges(end)
    centres = edges[:-1] + BIN_S / 2
    fig, axes = plt.subplots(
        4, 1, figsize=(9, 7.5), sharex=True, gridspec_kw={"height_ratios": [0.35, 1, 1, 1]}
    )
    band, mic, net, level = axes

    for ax in axes:
        for s in segments:
            if s.state == "muted":
                ax.axvspan(s.start, s.end, color="0.85", zorder=0, lw=0)
    band.set_yticks([])
    for s in segments:
        band.text((s.start + s.end) / 2, 0.5, s.state, ha="center", va="center")
    band.set_title(title, loc="left")

    mic.step(
        centres,
        os_share(reads, edges),
        where="mid",
        color=PALETTE[0],
        label="OS witness (pipe source: bytes accepted / offered)",
    )
    mic.step(
        centres,
        app_share(reads, edges),
        where="mid",
        color=PALETTE[1],
        ls="--",
        label="app witness (Frida: time with reads)",
    )
    mic.set_ylim(-0.05, 1.1)
    mic.set_ylabel("mic read\n(share of real time)")
    mic.legend(loc="lower left", fontsize=8, frameon=False)

    sent = packets[packets.direction.isin(["sent", "unknown"])]
    rtp = sent[sent.protocol == "rtp"]
    other = sent[sent.protocol != "rtp"]
    net.step(
        centres,
        np.histogram(rtp.t, bins=edges)[0] / BIN_S,
        where="mid",
        color=PALETTE[2],
        label="RTP packets sent",
    )
    net.step(
        centres,
        np.histogram(other.t, bins=edges)[0] / BIN_S,
        where="mid",
        color=PALETTE[4],
        ls=":",
        label="other packets sent",
    )
    net.set_ylabel("packets/s")
    net.legend(loc="lower left", fontsize=8, frameon=False)

    app_reads = reads[(reads.witness == "app") & (reads.rms > 0)]
    rms_db = 20 * np.log10(app_reads.rms.astype(float))
    level.plot(
        centres,
        _binned_median(app_reads.t, rms_db, edges),
        color=PALETTE[1],
        label="RMS the app received (dBFS)",
    )
    if rtp.audio_level_dbov.notna().any():
        level.plot(
            centres,
            _binned_median(rtp.t, rtp.audio_level_dbov, edges),
            color=PALETTE[2],
            ls="--",
            label="RFC 6464 level sent in clear (dBov)",
        )
    level.set_ylim(-130, 5)
    level.set_ylabel("level (dB)")
    level.set_xlabel("seconds since session start (grey: muted)")
    level.legend(loc="lower left", fontsize=8, frameon=False)
    source_footer(fig, [source], "from the session's manifest")
    fig.tight_layout()
    save(fig, outputs)


def timeline_from_files(
    session_dir: str | Path,
    packets_path: str | Path,
    reads_path: str | Path,
    outputs: list[str | Path],
) -> None:
    from reallymuted.analysis import evidence
    from reallymuted.io import read_jsonl

    manifest = evidence.load_manifest(session_dir)
    segments = evidence.mute_segments(read_jsonl(Path(session_dir) / "events.jsonl"))
    title = (
        f"{manifest['app']} · mute mode {manifest['mode']} · "
        f"stimulus {manifest.get('stimulus', {}).get('name', '?')} · rep {manifest['rep']}"
    )
    plot_timeline(
        pd.read_parquet(packets_path),
        pd.read_parquet(reads_path),
        segments,
        title,
        manifest.get("source", "testbed"),
        outputs,
    )
