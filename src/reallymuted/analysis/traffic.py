"""What a client sends per mute state: rates, sizes, audio levels in clear, flows.

Works on ``packets.parquet`` rows (see :mod:`reallymuted.analysis.extract`); only packets the
measured client sent are counted when the direction is known.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from reallymuted.analysis.evidence import Segment

log = logging.getLogger(__name__)

DIGITAL_SILENCE_RMS = 1.0  # G.711 payload RMS at or under this is silence (mu-law 0xFF = 0)


def sent(packets: pd.DataFrame) -> pd.DataFrame:
    """The packets the measured client sent (all packets when direction is unknown)."""
    if (packets.direction == "unknown").all():
        return packets
    return packets[packets.direction == "sent"]


def state_traffic_stats(packets: pd.DataFrame, segments: list[Segment]) -> pd.DataFrame:
    """Per mute state: packets/s and bytes/s sent, RTP rate, payload size, audio level."""
    out = sent(packets)
    rows = []
    for state in ("unmuted", "muted"):
        parts = [s for s in segments if s.state == state]
        if not parts:
            continue
        duration = sum(s.end - s.start for s in parts)
        in_state = out[out.state == state]
        rtp = in_state[in_state.protocol == "rtp"]
        rows.append(
            {
                "state": state,
                "packets_per_s": len(in_state) / duration,
                "bytes_per_s": float(in_state.frame_len.sum()) / duration,
                "rtp_packets_per_s": len(rtp) / duration,
                "rtp_bytes_per_s": float(rtp.payload_len.sum()) / duration,
                "rtp_payload_mean": float(rtp.payload_len.mean()) if len(rtp) else np.nan,
                "audio_level_median_dbov": float(rtp.audio_level_dbov.median())
                if rtp.audio_level_dbov.notna().any()
                else np.nan,
                "payload_rms_mean": float(rtp.payload_rms.mean())
                if rtp.payload_rms.notna().any()
                else np.nan,
                "flows": int(in_state.groupby(["protocol", "dst", "dport"], dropna=False).ngroups),
            }
        )
    return pd.DataFrame(rows)


FLOW_COLUMNS = [
    "protocol",
    "dst",
    "dport",
    "packets",
    "bytes",
    "first_t",
    "last_t",
    "states",
    "muted_only",
    "bursts",
    "periodic",
    "period_s",
]


def flows(packets: pd.DataFrame) -> pd.DataFrame:
    """One row per destination flow of the client: volume, when it was alive, its regularity.

    A flow is periodic when it comes in bursts (gaps over 1 s) at steady spacing, e.g. one
    telemetry POST a minute; its period is the median spacing of the bursts.
    """
    out = sent(packets)
    rows = []
    for (protocol, dst, dport), group in out.groupby(["protocol", "dst", "dport"], dropna=False):
        times = group.t.to_numpy(dtype=float)
        burst_times = times[np.concatenate([[True], np.diff(times) > 1.0])]
        spacing = np.diff(burst_times)
        periodic = len(spacing) >= 2 and float(np.std(spacing) / np.mean(spacing)) < 0.15
        states = sorted(set(group.state) - {"outside"})
        rows.append(
            {
                "protocol": protocol,
                "dst": dst,
                "dport": dport,
                "packets": len(group),
                "bytes": int(group.frame_len.sum()),
                "first_t": float(times.min()),
                "last_t": float(times.max()),
                "states": "+".join(states),
                "muted_only": states == ["muted"],
                "bursts": len(burst_times),
                "periodic": periodic,
                "period_s": float(np.median(spacing)) if periodic else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=FLOW_COLUMNS)


# -- leakage: does muted, encrypted traffic still say what the microphone hears? -------------
