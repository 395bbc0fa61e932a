"""The verdict of one ``reallymuted audit``: what the app did with the microphone while muted.

Read from the audit's evidence folder only (the same contract as a testbed session, ``source`` =
``desktop``), with the study's own arithmetic: per mute state, the read share at both witnesses
(:mod:`reallymuted.analysis.micpolicy`), the level of what the app read, what it sent
(:mod:`reallymuted.analysis.traffic`), where to, and uploads that look like telemetry; then
the policy label as ``mic_policy.csv`` gives it (the OS witness's when the two agree, both
written out when they do not). Written as ``verdict.json``, ``verdict.txt`` (the screen) and
``timeline.png`` beside the evidence.

What the two witnesses of an audit can and cannot see:

* the app-side witness (Frida in the app's processes) sees every read through libpulse, ALSA
  or PipeWire's stream API, with the level of the samples the app received; it cannot see a
  process it could not attach to (listed in events.jsonl) or an API it does not hook;
* the OS-side witness (the sound server's view of the app's capture streams, polled) sees
  whether the server feeds a stream, not what the app does with the samples; it cannot see a
  stream of a process outside the app's tree (a portal or helper the app asked to record).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reallymuted.analysis import extract, micpolicy, traffic
from reallymuted.analysis.evidence import Segment, label_states, load_manifest, mute_segments
from reallymuted.analysis.sdk import AUDIO_FIELD, flatten
from reallymuted.io import read_jsonl, write_json

MEDIA = frozenset({"rtp", "rtcp", "stun", "dtls", "srtp"})
PROCESS_EVENTS = ("app_exit", "orphan_exit", "killed", "stop_requested", "trace_gave_up")


def packets_of(session: Path, manifest: dict[str, Any]) -> pd.DataFrame:
    """The capture, each packet ``sent`` by the app (from its namespace's address) or not."""
    packets = extract.read_packets(session / "traffic.pcapng", float(manifest["start_epoch"]))
    address = (manifest.get("client") or {}).get("address")
    if address:
        sent = packets.src.eq(address).fillna(False).to_numpy(bool)
        received = packets.dst.eq(address).fillna(False).to_numpy(bool)
        packets["direction"] = np.select([sent, received], ["sent", "received"], "other")
    return packets


def policy_of(labels: dict[str, micpolicy.PolicyLabel]) -> tuple[str, bool]:
    """The label ``mic_policy.csv`` would give this one session, and whether the witnesses agree."""
    os_label, app_label = labels["os"], labels["app"]
    agree = micpolicy.witnesses_agree(os_label, app_label)
    if os_label.policy == "not observed":
        return app_label.policy, False
    if agree:
        return os_label.policy, True
    return f"disagree: {'/'.join(sorted({os_label.policy, app_label.policy}))}", False


def clear_uploads(session: Path, packets: pd.DataFrame) -> list[dict[str, Any]]:
    """HTTP requests in clear with a body: their level-like fields and the state they were in."""
    from reallymuted.analysis.telemetry.witnesses import pcap_posts

    sent = packets[(packets.direction == "sent") & packets.http_method.isin(["POST", "PUT"])]
    uploads = []
    for port in sorted({int(p) for p in sent.dport.dropna()}):
        for post in pcap_posts(session / "traffic.pcapng", port):
            try:
                leaves = flatten(json.loads(post["body"]))
            except (ValueError, UnicodeDecodeError):
                leaves = {}
            level = {k: v for k, v in leaves.items() if AUDIO_FIELD.search(k.rsplit(".", 1)[-1])}
            uploads.append(
                {
                    "epoch": post["time_epoch"],
                    "port": port,
                    "path": post["path"],
                    "bytes": len(post["body"]),
                    "level_fields": dict(list(level.items())[:10]),
                }
            )
    return uploads


def encrypted_uploads(packets: pd.DataFrame) -> list[dict[str, Any]]:
    """Non-media flows that sent data while muted: sizes and timing only (the bodies are
    encrypted); periodic ones are what telemetry usually looks like."""
    sent = packets[(packets.direction == "sent") & ~packets.protocol.isin(MEDIA)]
    flows = traffic.flows(sent)
    muted = sent[sent.state == "muted"]
    rows = []
    for flow in flows.itertuples():
        in_muted = muted[(muted.dst == flow.dst) & (muted.dport == flow.dport)]
        payload = int(in_muted.payload_len.fillna(0).sum())
        if payload == 0:
            continue
        rows.append(
            {
                "protocol": flow.protocol,
                "destination": f"{flow.dst}:{flow.dport}",
                "muted_payload_bytes": payload,
                "muted_packets": len(in_muted),
                "periodic": bool(flow.periodic),
                "period_s": None if math.isnan(flow.period_s) else round(flow.period_s, 2),
            }
        )
    return sorted(rows, key=lambda r: -r["muted_payload_bytes"])


def _round(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else round(float(value), 4)
    return value


def load_audit(
    session: Path,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[Segment], pd.DataFrame, pd.DataFrame]:
    """Manifest, events, mute segments, reads and packets (each with its state) of an audit."""
    manifest = load_manifest(session)
    events = read_jsonl(session / "events.jsonl")
    segments = mute_segments(events)
    reads = extract.read_mic_trace(session / "mic_trace.jsonl")
    numeric = ["t", "bytes", "frames", "dropped", "peak", "rms"]  # float even with no rows
    reads[numeric] = reads[numeric].astype(float)
    reads["state"] = label_states(reads["t"], segments)
    packets = packets_of(session, manifest)
    packets["state"] = label_states(packets["t"], segments)
    return manifest, events, segments, reads, packets


def audit_verdict(session_dir: str | Path) -> dict[str, Any]:
    """The verdict of one audit's evidence folder (see the module docstring)."""
    session = Path(session_dir)
    manifest, events, segments, reads, packets = load_audit(session)
    params = micpolicy.PolicyParams()
    mic = micpolicy.state_mic_stats(reads, segments, params)
    sent = traffic.state_traffic_stats(packets, segments)
    states = mic.merge(sent, on="state", how="outer") if len(mic) else sent
    labels = {w: micpolicy.label_policy(reads, segments, w, params) for w in micpolicy.WITNESSES}
    policy, agree = policy_of(labels)
    destinations = traffic.flows(traffic.sent(packets)).sort_values("bytes", ascending=False)
    muted_s = sum(s.end - s.start for s in segments if s.state == "muted")
    notes = []
    if not muted_s:
        notes.append("no muted time was recorded: the timeline has no mute inside the audit")
    if not (reads.witness == "app").any():
        notes.append("the app-side witness saw no read: the app never read the microphone "
                     "through libpulse, ALSA or PipeWire (or could not be traced)")  # fmt: skip
    if not manifest.get("isolated", True):
        notes.append("attached with --pid: the capture holds the whole host's traffic")
    return {
        "source": manifest["source"],
        "app": manifest["app"],
        "mode": manifest["mode"],
        "evidence": str(session.resolve()),
        "status": manifest["status"],
        "failure": manifest.get("failure"),
        "ended_by": manifest.get("ended_by"),
        "sound_server": manifest.get("sound_server"),
        "isolated": manifest.get("isolated"),
        "policy": policy,
        "witnesses_agree": agree,
        "witnesses": {
            w: {
                "policy": label.policy,
                "muted_read_share": _round(label.muted_share),
                "unmuted_read_share": _round(label.unmuted_share),
                "evidence": label.evidence,
            }
            for w, label in labels.items()
        },
        "states": [{k: _round(v) for k, v in row.items()} for row in states.to_dict("records")],
        "muted_s": round(muted_s, 3),
        "destinations": [
            {k: _round(v) for k, v in row.items()}
            for row in destinations.head(10).to_dict("records")
        ],
        "uploads_encrypted": encrypted_uploads(packets),
        "uploads_clear": clear_uploads(session, packets),
        "app_events": [e for e in events if e["event"] in PROCESS_EVENTS],
        "notes": notes,
    }


def screen(verdict: dict[str, Any]) -> str:
    """The verdict as one terminal screen."""
    lines = [
        f"reallymuted audit of {verdict['app']} ({verdict['mode']}), source: {verdict['source']}",
        f"  ended: {verdict['ended_by']}"
        + (f"; FAILED: {verdict['failure']}" if verdict["failure"] else ""),
        f"  sound server: {verdict['sound_server']}; isolated capture: {verdict['isolated']}",
        "",
        f"  POLICY WHILE MUTED: {verdict['policy']}"
        + ("" if verdict["witnesses_agree"] else "  (the two witnesses do not agree)"),
    ]  # fmt: skip
    for witness, found in verdict["witnesses"].items():
        lines.append(f"    {witness:3} witness: {found['evidence']}")
    lines += ["", f"  {'state':9}{'app reads/s':>12}{'app RMS':>9}{'OS share':>9}"
                  f"{'pkts/s':>8}{'bytes/s':>10}{'RTP dBov':>9}"]  # fmt: skip
    for row in verdict["states"]:

        def cell(key: str, width: int, fmt: str = ".2f", row: dict[str, Any] = row) -> str:
            value = row.get(key)
            return f"{'-':>{width}}" if value is None else f"{value:>{width}{fmt}}"

        lines.append(
            f"  {row['state']:9}{cell('app_reads_per_s', 12, '.1f')}"
            f"{cell('app_rms_mean', 9, '.3f')}"
            f"{cell('os_read_share', 9)}{cell('packets_per_s', 8, '.1f')}"
            f"{cell('bytes_per_s', 10, '.0f')}{cell('audio_level_median_dbov', 9, '.0f')}"
        )
    lines += ["", "  destinations (most bytes first):"]
    for d in verdict["destinations"][:5]:
        lines.append(
            f"    {d['protocol']:6} {d['dst']}:{d['dport']}  {d['bytes']} B  [{d['states']}]"
        )
    if not verdict["destinations"]:
        lines.append("    none")
    uploads = verdict["uploads_encrypted"]
    lines.append(f"  non-media uploads while muted: {len(uploads)} flow(s)")
    for u in uploads[:3]:
        every = f", every {u['period_s']} s" if u["periodic"] else ""
        lines.append(f"    {u['destination']} {u['muted_payload_bytes']} B{every}")
    with_level = [u for u in verdict["uploads_clear"] if u["level_fields"]]
    lines.append(f"  clear HTTP uploads: {len(verdict['uploads_clear'])}, "
                 f"{len(with_level)} with level-like fields")  # fmt: skip
    for event in verdict["app_events"]:
        detail = event.get("signal") or event.get("returncode", "")
        lines.append(f"  t={event['t']:.1f} s {event['event']} pid {event.get('pid', '')} {detail}")
    lines += [f"  note: {n}" for n in verdict["notes"]]
    lines += ["", f"  evidence: {verdict['evidence']}"]
    return "\n".join(lines) + "\n"


def write_verdict(session_dir: str | Path) -> dict[str, Any]:
    """``verdict.json``, ``verdict.txt`` and ``timeline.png`` beside the evidence."""
    from reallymuted.figures.sessions import plot_timeline

    session = Path(session_dir)
    verdict = audit_verdict(session)
    write_json(session / "verdict.json", verdict)
    (session / "verdict.txt").write_text(screen(verdict))
    manifest, _, segments, reads, packets = load_audit(session)
    title = f"{manifest['app']} ({manifest['mode']}): audit of {manifest['start']['utc'][:19]} UTC"
    plot_timeline(packets, reads, segments, title, manifest["source"], [session / "timeline.png"])
    return verdict
