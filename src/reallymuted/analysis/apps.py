"""The ten apps of the study: the registry (workflow/apps.yaml) and the per-app tables.

The registry says how each app is offered, driven and traced, and what the paper found (an
expected value, never a result). The per-app tables set, for each app, the paper's finding
beside every source of evidence this study has for it — and say plainly when that source is a
model of the app (``testbed-profile``) or did not run at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reallymuted.config import load_registry

PLATFORMS = ("windows", "macos", "linux", "web")
FINDINGS = {
    "M1": "continuous raw-mic reads while muted",
    "M2": "buffer status flags only while muted",
    "M3": "WebRTC software mute (browser keeps reading, send stream withholds)",
    "M4": "not determined (could not be traced)",
}
PLATFORM_NAMES = {"windows": "Windows", "macos": "macOS"}
# The finding each testbed profile models (testbed/drivers/profile.py). A Chromium page cannot model
# M2: while a track is live, Chromium's audio service reads every sample, so a profile of a
# flags-only app still reads the microphone continuously; its read share is not the app's.
PROFILE_FINDING = {
    "webex-2021": "M1",
    "zoom-native": "M2",
    "native-flags-only": "M2",
    "webrtc-soft-mute": "M3",
}
UNMODELLED = {
    "M2": "M2, buffer flags only: a Chromium page reads every sample",
}
# The vendors' own client libraries (reallymuted.testbed.drivers.sdk): rows only where sessions
# ran, found by the registry app their manifest names.
SDK_SOURCES = ("sdk", "sdk-preview")
NOT_RUN = {
    "native": "not run: needs a {platform} host with the app installed and an account",
    "web": "not run: needs internet access and an account for the web app",
}


def platforms_table(registry: dict[str, Any]) -> pd.DataFrame:
    """Table 2 analogue: how each app is offered per platform (native / web / none)."""
    rows = []
    for app, entry in registry.items():
        row: dict[str, Any] = {"app": app, "name": entry["name"], "vendor": entry["vendor"]}
        for platform in PLATFORMS:
            spec = entry["platforms"][platform]
            offer = spec["offer"]
            row[platform] = f"{offer} ({spec['audio_api']})" if "audio_api" in spec else offer
        row["paper_finding"] = "+".join(entry["paper_finding"]["codes"])
        row["testbed_profile"] = entry["testbed_profile"] or "none"
        row["status"] = entry.get("status", "")
        row["source"] = "registry"
        rows.append(row)
    return pd.DataFrame(rows)


def drivers_for(entry: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, driver) pairs that exist for an app, from how it is offered."""
    pairs = []
    if entry["testbed_profile"]:
        pairs.append(("testbed-profile", entry["testbed_profile"]))
    for platform in ("windows", "macos"):
        if entry["platforms"][platform]["offer"] == "native":
            pairs.append(("native", f"native-{platform}"))
    if entry["platforms"]["web"]["offer"] == "web":
        pairs.append(("web", "web"))
    return pairs


HEADLINE_COLUMNS = [
    "source",
    "app",
    "app_name",
    "paper_finding",
    "measured_as",
    "client_code",
    "status",
    "mute_mode",
    "policy",
    "period_s",
    "muted_read_share_os",
    "muted_read_share_app",
    "witnesses_agree",
    "reads_modelled",
    "muted_packets_per_s",
    "muted_bytes_per_s",
    "muted_destinations",
    "periodic_flows",
    "audio_derived_data_leaving",
    "evidence",
    "sessions",
]


def _muted_destinations(flows: pd.DataFrame) -> str:
    muted = flows[flows.states.fillna("").str.contains("muted") & ~flows.states.eq("unmuted")]
    if muted.empty:
        return "none"
    return ", ".join(sorted({f"{r.protocol} {r.dst}:{int(r.dport)}" for r in muted.itertuples()}))


def _periodic_flows(flows: pd.DataFrame) -> str:
    periodic = flows[flows.periodic.astype(bool)]
    return (
        ", ".join(
            sorted(
                {
                    f"{r.protocol} {r.dst}:{int(r.dport)} every {r.period_s:.3g} s"
                    for r in periodic.itertuples()
                }
            )
        )
        or "none"
    )


def audio_derived_evidence(
    muted_states: pd.DataFrame, checks: pd.DataFrame | None
) -> tuple[str, str]:
    """("yes"/"no", why) — is data derived from the muted microphone seen leaving the client?

    Looked for in what the capture can read: telemetry records decoded while muted, an RFC 6464
    level header other than silence, a G.711 payload that is not silence. Encrypted payloads
    cannot be read here; whether their sizes and timing still leak is the leakage analysis.
    """
    reasons = []
    if checks is not None and not checks.empty and checks.audio_derived_muted.astype(bool).any():
        posts = int(checks.muted_posts.sum())
        reasons.append(f"{posts} telemetry POST(s) with microphone gains decoded while muted")
    levels = muted_states.audio_level_median_dbov.dropna()
    if len(levels) and (levels > -127).any():
        reasons.append(f"RFC 6464 level {levels.max():.0f} dBov sent in clear while muted")
    rms = muted_states.payload_rms_mean.dropna()
    if len(rms) and (rms > 1.0).any():
        reasons.append(f"G.711 payload RMS {rms.max():.0f} while muted")
    if reasons:
        return "yes", "; ".join(reasons)
    rtp = muted_states.rtp_packets_per_s.mean()
    if not rtp or np.isnan(rtp):
        why = "no RTP while muted"
    elif len(levels):
        why = f"RTP continues at {rtp:.0f} packets/s but its level header says silence (-127 dBov)"
    elif len(rms):
        why = f"RTP continues at {rtp:.0f} packets/s carrying digital silence"
    else:
        why = f"RTP continues at {rtp:.0f} packets/s, encrypted (see the leakage table)"
    if checks is not None and not checks.empty:
        why += f"; {int(checks.posts_pcap.sum())} telemetry POST(s)"
    return "no", why


def headline_table(
    registry: dict[str, Any],
    policy: pd.DataFrame,
    states: pd.DataFrame,
    flows: pd.DataFrame,
    checks: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per app: the paper's finding beside each source of evidence this study has for it.

    A ``testbed-profile`` row measures the project's model of the app's published behaviour,
    and says so in ``measured_as``; a source that did not run has a row that says why and no
    numbers, so an absent measurement is never read as a zero. Sessions run under the OS-level
    mute (``guard`` on) are not the app's own behaviour: they are left to the guard table.
    """
    from reallymuted.analysis.micpolicy import with_driver_keys

    policy = with_driver_keys(policy, states)
    policy = policy[policy.guard != "on"]
    rows = []
    for app, entry in registry.items():
        finding = "+".join(entry["paper_finding"]["codes"]) + ": " + entry["paper_finding"]["text"]
        base = {"app": app, "app_name": entry["name"], "paper_finding": finding}
        pairs = drivers_for(entry)
        if not entry["testbed_profile"]:
            rows.append(
                {
                    **base,
                    "source": "testbed-profile",
                    "measured_as": "none",
                    "status": "no profile: the paper could not determine this app's behaviour",
                }
            )
        for source, driver in pairs:
            measured = sessions_of(policy, source, driver, app)
            if measured.empty:
                rows.append({**base, **_not_measured(source, driver)})
                continue
            for row in measured.itertuples():
                rows.append({**base, **_measured_row(source, driver, row, states, flows, checks)})
        for source in SDK_SOURCES:
            measured = policy[(policy.source == source) & (policy.registry_app == app)]
            for row in measured.itertuples():
                rows.append(
                    {**base, **_measured_row(source, row.driver, row, states, flows, checks)}
                )
    return pd.DataFrame(rows, columns=HEADLINE_COLUMNS)


def sessions_of(policy: pd.DataFrame, source: str, driver: str, app: str) -> pd.DataFrame:
    """The policy rows (with their sessions' driver keys) of one registry app and driver.

    A testbed profile's sessions are the config app named after the profile (``webex-2021``);
    native and web sessions carry the registry id they ran (``registry_app``), whatever the
    config calls them (``zoom-windows``), and the driver tells Windows from macOS.
    """
    if source == "testbed-profile":
        return policy[(policy.source == source) & (policy.app == driver)]
    return policy[
        (policy.source == source) & (policy.registry_app == app) & (policy.driver == driver)
    ]


def _not_measured(source: str, driver: str) -> dict[str, Any]:
    """The row of a source that has no sessions in this run, saying why and holding no numbers."""
    platform = PLATFORM_NAMES.get(driver.removeprefix("native-"), driver)
    if source == "testbed-profile":
        return {
            "source": source,
            "measured_as": f"model {driver} (not the app)",
            "status": "not in this run's configuration",
        }
    return {
        "source": source,
        "measured_as": driver,
        "status": NOT_RUN[source].format(platform=platform),
    }


def _measured_row(
    source: str,
    driver: str,
    row: Any,
    states: pd.DataFrame,
    flows: pd.DataFrame,
    checks: pd.DataFrame | None,
) -> dict[str, Any]:
    """One measured source of an app: its sessions' policy, muted traffic and what left."""
    key = row.app  # the config's name of these sessions (zoom-windows, webex-2021, ...)

    def of(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[(frame.source == source) & (frame.app == key)] if not frame.empty else frame

    muted = of(states)
    muted = muted[(muted.mute_mode == row.mute_mode) & (muted.state == "muted")]
    session_flows = of(flows)
    if not session_flows.empty:
        session_flows = session_flows[session_flows.mute_mode == row.mute_mode]
    check = of(checks) if checks is not None and not checks.empty else None
    leaving, why = audio_derived_evidence(muted, check)
    model = source == "testbed-profile"
    unmodelled = UNMODELLED.get(PROFILE_FINDING.get(driver, "")) if model else None
    if model:
        measured_as = f"model {driver} of the app's published behaviour, not the app"
    elif source in SDK_SOURCES:
        measured_as = f"the vendor's own library, not the app: {row.client_scope}"
    else:
        measured_as = driver
    return {
        "source": source,
        "measured_as": measured_as,
        "client_code": row.client_code or "",
        "status": "measured",
        "mute_mode": row.mute_mode,
        "policy": row.policy,
        "period_s": row.period_s,
        "muted_read_share_os": row.muted_read_share_os,
        "muted_read_share_app": row.muted_read_share_app,
        "witnesses_agree": row.witnesses_agree,
        "reads_modelled": f"no: {unmodelled}" if unmodelled else "yes",
        "muted_packets_per_s": muted.packets_per_s.mean(),
        "muted_bytes_per_s": muted.bytes_per_s.mean(),
        "muted_destinations": _muted_destinations(session_flows)
        if not session_flows.empty
        else "none",
        "periodic_flows": _periodic_flows(session_flows) if not session_flows.empty else "none",
        "audio_derived_data_leaving": leaving,
        "evidence": why,
        "sessions": row.sessions,
    }


def write_headline(
    registry_path: str | Path,
    policy_path: str | Path,
    states_path: str | Path,
    flows_path: str | Path,
    checks_path: str | Path | None,
    table_out: str | Path,
    figure_outputs: list[str | Path],
) -> None:
    from reallymuted.figures.apps import plot_headline
    from reallymuted.io import write_csv

    checks = pd.read_csv(checks_path) if checks_path else None
    table = headline_table(
        load_registry(registry_path),
        pd.read_csv(policy_path),
        pd.read_csv(states_path),
        pd.read_csv(flows_path),
        checks,
    )
    write_csv(table_out, table)
    plot_headline(table, figure_outputs)


def write_platforms(registry_path: str | Path, out: str | Path) -> None:
    from reallymuted.io import write_csv

    write_csv(out, platforms_table(load_registry(registry_path)))
