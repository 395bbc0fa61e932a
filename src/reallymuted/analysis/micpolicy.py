"""What a client does with the microphone per mute state, and the policy label that follows.

Two independent witnesses see the microphone: the OS level (the paced writer feeding the
PulseAudio pipe source: bytes accepted vs dropped) and the app level (reads intercepted by
Frida in the client). Each gives, per mute state, the share of real time read; the policy is
labelled from each witness separately, and the two labels are compared, never merged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reallymuted.analysis import evidence, traffic
from reallymuted.analysis.evidence import (
    DRIVER_KEYS,
    Segment,
    driver_keys,
    session_keys,
    source_label,
    value_key,
)
from reallymuted.io import read_jsonl, write_csv, write_json

log = logging.getLogger(__name__)

WITNESSES = ("os", "app")


@dataclass(frozen=True)
class PolicyParams:
    bin_s: float = 0.1  # time resolution of "was the microphone read in this interval"
    grace_s: float = 1.5  # ignored after each mute/unmute: devices take time to suspend/resume
    stops_below: float = 0.05  # muted share under this: the client stopped reading
    continuous_ratio: float = 0.8  # muted share at least this × unmuted share: never stopped
    period_cv_max: float = 0.15  # burst spacing steadier than this: periodic


@dataclass(frozen=True)
class PolicyLabel:
    policy: str  # continuous | periodic | stops | intermittent | not observed
    period_s: float
    muted_share: float
    unmuted_share: float
    evidence: str


def active_bins(
    reads: pd.DataFrame, witness: str, start: float, end: float, bin_s: float
) -> np.ndarray:
    """Boolean per bin of [start, end): did this witness see the microphone being read?"""
    edges = np.arange(start, end + 1e-9, bin_s)
    if len(edges) < 2:
        return np.zeros(0, dtype=bool)
    rows = reads[(reads.witness == witness) & (reads.t >= start) & (reads.t < end)]
    if witness == "os":
        # the writer logs every tick; only ticks whose bytes were accepted are reads
        rows = rows[rows["bytes"].fillna(0) > 0]
    counts, _ = np.histogram(rows.t.to_numpy(dtype=float), bins=edges)
    return counts > 0


def read_share(reads: pd.DataFrame, witness: str, start: float, end: float, bin_s: float) -> float:
    """Share of real time the microphone was read in [start, end).

    OS witness: bytes accepted / bytes offered (the writer offers exactly real time).
    App witness: share of time bins with at least one intercepted read.
    """
    if end <= start:
        return float("nan")
    if witness == "os":
        rows = reads[(reads.witness == "os") & (reads.t >= start) & (reads.t < end)]
        offered = rows["bytes"].fillna(0).sum() + rows["dropped"].fillna(0).sum()
        return float(rows["bytes"].fillna(0).sum() / offered) if offered else float("nan")
    bins = active_bins(reads, witness, start, end, bin_s)
    return float(bins.mean()) if len(bins) else float("nan")


def burst_starts(bins: np.ndarray, bin_s: float) -> np.ndarray:
    """Times (from the first bin) at which runs of active bins begin."""
    padded = np.concatenate([[False], bins])
    return np.flatnonzero(padded[1:] & ~padded[:-1]) * bin_s


def _trimmed(segment: Segment, grace_s: float) -> tuple[float, float]:
    return segment.start + grace_s, segment.end


def label_policy(
    reads: pd.DataFrame, segments: list[Segment], witness: str, params: PolicyParams
) -> PolicyLabel:
    """Label one session's muted behaviour as seen by one witness."""
    shares: dict[str, list[tuple[float, float]]] = {"muted": [], "unmuted": []}
    starts: list[np.ndarray] = []
    for segment in segments:
        start, end = _trimmed(segment, params.grace_s)
        if end - start < params.bin_s * 5:
            continue
        shares[segment.state].append(
            (read_share(reads, witness, start, end, params.bin_s), end - start)
        )
        if segment.state == "muted":
            bins = active_bins(reads, witness, start, end, params.bin_s)
            # drop a burst cut by the segment start: its start is not a real burst start
            found = burst_starts(bins, params.bin_s)
            starts.append(found[found > 0] if len(bins) and bins[0] else found)

    def weighted(pairs: list[tuple[float, float]]) -> float:
        pairs = [(s, w) for s, w in pairs if not np.isnan(s)]
        return (
            float(np.average([s for s, _ in pairs], weights=[w for _, w in pairs]))
            if pairs
            else float("nan")
        )

    muted, unmuted = weighted(shares["muted"]), weighted(shares["unmuted"])
    if np.isnan(muted):
        return PolicyLabel("not observed", np.nan, muted, unmuted, f"{witness}: no muted data")
    intervals = np.concatenate([np.diff(s) for s in starts if len(s) > 1] or [np.array([])])
    evidence = f"{witness}: muted share {muted:.3f}, unmuted share {unmuted:.3f}"
    if muted < params.stops_below:
        return PolicyLabel("stops", np.nan, muted, unmuted, evidence)
    # A session with no unmuted phase (the attack's, muted from join to leave) has no
    # reference of its own: compare with reading in real time (share 1).
    reference = 1.0 if np.isnan(unmuted) else unmuted
    if muted >= params.continuous_ratio * reference:
        return PolicyLabel("continuous", np.nan, muted, unmuted, evidence)
    if len(intervals) >= 2:
        period = float(np.median(intervals))
        cv = float(np.std(intervals) / np.mean(intervals))
        evidence += f", {len(intervals) + 1} bursts, spacing {period:.2f} s (cv {cv:.2f})"
        if cv <= params.period_cv_max:
            return PolicyLabel("periodic", period, muted, unmuted, evidence)
    return PolicyLabel("intermittent", np.nan, muted, unmuted, evidence)


def witnesses_agree(
    os_label: PolicyLabel, app_label: PolicyLabel, period_tolerance: float = 0.1
) -> bool:
    """Both witnesses give the same label (and, if periodic, periods within the tolerance)."""
    if os_label.policy != app_label.policy:
        return False
    if os_label.policy == "periodic":
        return abs(os_label.period_s - app_label.period_s) <= period_tolerance * app_label.period_s
    return True


def state_mic_stats(
    reads: pd.DataFrame, segments: list[Segment], params: PolicyParams
) -> pd.DataFrame:
    """Per mute state: read share and read rate at both witnesses, level the app received."""
    rows = []
    for state in ("unmuted", "muted"):
        parts = [s for s in segments if s.state == state]
        duration = sum(s.end - s.start for s in parts)
        if not parts:
            continue
        row: dict[str, float | str] = {"state": state, "duration_s": duration}
        for witness in WITNESSES:
            shares = [read_share(reads, witness, s.start, s.end, params.bin_s) for s in parts]
            weights = [s.end - s.start for s in parts]
            valid = [(x, w) for x, w in zip(shares, weights, strict=True) if not np.isnan(x)]
            row[f"{witness}_read_share"] = (
                float(np.average([x for x, _ in valid], weights=[w for _, w in valid]))
                if valid
                else np.nan
            )
            in_state = reads[(reads.witness == witness) & (reads.state == state)]
            if witness == "os":
                in_state = in_state[in_state["bytes"].fillna(0) > 0]
            row[f"{witness}_reads_per_s"] = len(in_state) / duration if duration else np.nan
        app = reads[(reads.witness == "app") & (reads.state == state)]
        row["app_peak_mean"] = float(app.peak.mean()) if len(app) else np.nan
        row["app_rms_mean"] = float(app.rms.mean()) if len(app) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


# -- one session, and the study's tables -----------------------------------------------------


def analyse_session(
    session_dir: str | Path,
    packets_path: str | Path,
    reads_path: str | Path,
    params: PolicyParams = PolicyParams(),
) -> tuple[pd.DataFrame, dict[str, object]]:
    """Per-state rows (mic at both witnesses + traffic) and the session's policy labels."""

    manifest = evidence.load_manifest(session_dir)
    events = read_jsonl(Path(session_dir) / "events.jsonl")
    segments = evidence.mute_segments(events)
    reads = pd.read_parquet(reads_path)
    packets = pd.read_parquet(packets_path)
    mic = state_mic_stats(reads, segments, params)
    sent = traffic.state_traffic_stats(packets, segments)
    states = mic.merge(sent, on="state", how="outer")
    for column, value in evidence.os_mute_stats(reads, events).items():  # a guarded session's
        states.loc[states.state == "muted", column] = value
    keys = session_keys(manifest)
    for key, value in reversed(keys.items()):
        states.insert(0, key, value)
    for offset, (key, value) in enumerate(driver_keys(manifest).items()):
        states.insert(len(keys) + offset, key, value)
    labels = {w: label_policy(reads, segments, w, params) for w in WITNESSES}
    policy = {
        **keys,
        "policy_os": labels["os"].policy,
        "policy_app": labels["app"].policy,
        "period_s_os": labels["os"].period_s,
        "period_s_app": labels["app"].period_s,
        "muted_read_share_os": labels["os"].muted_share,
        "muted_read_share_app": labels["app"].muted_share,
        "witnesses_agree": witnesses_agree(labels["os"], labels["app"]),
        "evidence": "; ".join(label.evidence for label in labels.values()),
    }
    return states, policy


def policy_table(policies: pd.DataFrame) -> pd.DataFrame:
    """One row per source × app × mute mode: the policy both witnesses saw, across sessions.

    The label is the OS witness's when every session's two witnesses agree; a disagreement
    (between witnesses, or between sessions) is written out, not resolved. Where the OS
    witness saw nothing in any session (native hosts have none), the label is the app
    witness's alone: ``muted_read_share_os`` is then empty and ``witnesses_agree`` false.
    """
    rows = []
    for (source, app, mode), group in policies.groupby(["source", "app", "mute_mode"], sort=True):
        os_seen = not group.policy_os.eq("not observed").all()
        agree = bool(group.witnesses_agree.all())
        labels = sorted(set(group.policy_os) | set(group.policy_app))
        if not os_seen:
            labels = sorted(set(group.policy_app))
        single = (agree or not os_seen) and len(labels) == 1
        policy = labels[0] if single else "disagree: " + "/".join(labels)
        periods = pd.concat([group.period_s_os, group.period_s_app]).dropna()
        rows.append(
            {
                "source": source,
                "app": app,
                "mute_mode": mode,
                "policy": policy,
                "period_s": float(periods.median()) if len(periods) else np.nan,
                "muted_read_share_os": float(group.muted_read_share_os.mean()),
                "muted_read_share_app": float(group.muted_read_share_app.mean()),
                "witnesses_agree": agree,
                "sessions": len(group),
            }
        )
    return pd.DataFrame(rows)


def write_session_analysis(
    session_dir: str | Path,
    packets_path: str | Path,
    reads_path: str | Path,
    out: dict[str, str | Path],
    params: PolicyParams = PolicyParams(),
) -> None:
    """``out`` maps states, policy and flows to paths."""

    states, policy = analyse_session(session_dir, packets_path, reads_path, params)
    flows = traffic.flows(pd.read_parquet(packets_path))
    for key, value in reversed(session_keys(evidence.load_manifest(session_dir)).items()):
        flows.insert(0, key, value)
    write_csv(out["states"], states)
    write_json(out["policy"], policy)
    write_csv(out["flows"], flows)
    log.info(
        "%s: policy os=%s app=%s (agree: %s)",
        session_dir,
        policy["policy_os"],
        policy["policy_app"],
        policy["witnesses_agree"],
    )


def testbed_values(policy: pd.DataFrame, states: pd.DataFrame) -> dict[str, object]:
    """Named values per app and mute mode, for the claims table and the per-app tables.

    The file's ``source`` is that of all its rows; ``source_of`` gives each key the source of
    the rows it comes from, since real clients and models of apps sit side by side here.
    ``sources``, ``drivers`` and ``apps`` say what ran, so that a claim can tell a session
    that did not run from a value that is missing.
    """
    values: dict[str, object] = {"source": source_label(policy.source)}
    source_of: dict[str, str] = {}

    def put(key: str, value: object, source: object) -> None:
        values[key] = value
        source_of[key] = str(source)

    for row in policy.itertuples():
        put(value_key("policy", row.app, row.mute_mode), row.policy, row.source)
        put(
            value_key("witnesses_agree", row.app, row.mute_mode),
            bool(row.witnesses_agree),
            row.source,
        )
        if not np.isnan(row.period_s):
            put(value_key("period_s", row.app, row.mute_mode), row.period_s, row.source)
    for column in ("rtp_packets_per_s", "rtp_payload_mean", "audio_level_median_dbov"):
        for state in ("muted", "unmuted"):
            rows = states[states.state == state].groupby(["source", "app", "mute_mode"])
            for (source, app, mode), value in rows[column].mean().dropna().items():
                put(value_key(state, column, app, mode), float(value), source)
    for key, (value, source) in native_values(policy, states).items():
        put(key, value, source)
    values["sources"] = sorted(set(policy.source.astype(str)))
    values["drivers"] = sorted({str(d) for d in states.get("driver", []) if pd.notna(d) and d})
    values["apps"] = sorted(set(policy.app.astype(str)))
    values["source_of"] = source_of
    return values


def native_values(policy: pd.DataFrame, states: pd.DataFrame) -> dict[str, tuple[object, str]]:
    """What the native sessions show per registry app (M1, M4), keyed for the claims table;
    nothing when no native session ran (the claims then say the hosts were not run)."""
    native = with_driver_keys(policy, states)
    native = native[native.source == "native"]
    if native.empty:
        return {}
    platforms = sorted({str(d).removeprefix("native-") for d in native.driver})
    continuous = sorted(set(native[native.policy == "continuous"].registry_app))
    found: dict[str, tuple[object, str]] = {
        "native_platforms": (platforms, "native"),
        "native_continuous_apps": (continuous, "native"),
    }
    native_states = states[states.source == "native"]
    for platform in platforms:
        rows = native[native.driver == f"native-{platform}"]
        untraced = [
            r.registry_app
            for r in rows.itertuples()
            if _app_witness_silent(native_states[native_states.app == r.app])
        ]
        found[f"native_untraced_apps_{platform}"] = (sorted(set(untraced)), "native")
    return found


def with_driver_keys(policy: pd.DataFrame, states: pd.DataFrame) -> pd.DataFrame:
    """The policy rows with the driver and registry app of their sessions (from the states
    table, which carries them per session; empty where the analyses predate them)."""
    keys = ["source", "app", "mute_mode"]
    columns = [c for c in DRIVER_KEYS if c in states.columns]
    drivers = states[[*keys, *columns]].drop_duplicates(keys)
    joined = policy.merge(drivers, on=keys, how="left") if columns else policy.copy()
    for column in DRIVER_KEYS:  # read back from CSV, "" came in as NaN
        if column not in joined.columns:
            joined[column] = ""
        joined[column] = joined[column].astype(object).where(joined[column].notna(), "")
    return joined


def _app_witness_silent(states: pd.DataFrame) -> bool:
    """The tracer saw no capture call in any state of these sessions (the app was not traced,
    as opposed to an app that stopped reading while muted)."""
    reads = states.get("app_reads_per_s", pd.Series(dtype=float)).fillna(0)
    return bool(len(states)) and bool((reads <= 0).all())


def write_tables(
    states_paths: list[str],
    policy_paths: list[str],
    flows_paths: list[str],
    out: dict[str, str | Path],
) -> None:
    """Concatenate the sessions' analyses into the study's tables and the named values."""
    import json

    from reallymuted.io import write_csv, write_json

    # a client that sent nothing has a flows table with a header and no rows
    all_flows = pd.concat([pd.read_csv(p) for p in flows_paths], ignore_index=True)
    write_csv(out["flows"], all_flows)
    states = pd.concat([pd.read_csv(p) for p in states_paths], ignore_index=True)
    policies = pd.DataFrame([json.loads(Path(p).read_text()) for p in policy_paths])
    order = ["source", "app", "mute_mode", "stimulus", "rep"]
    states = states.sort_values([*order, "state"], kind="stable")
    policy = policy_table(policies.sort_values(order, kind="stable"))
    write_csv(out["states"], states)
    write_csv(out["policy"], policy)
    write_json(out["values"], testbed_values(policy, states))
    log.info("%d sessions, %d app x mode rows", len(policies), len(policy))
