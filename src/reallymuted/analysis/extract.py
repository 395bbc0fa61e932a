"""Raw session evidence → tidy tables: packets (tshark fields), microphone reads, mute timeline.

Bulk packet parsing is one ``tshark -T fields`` pass read by pandas' pyarrow CSV engine;
nothing here dissects packets one by one (that is left to pyshark for the few telemetry
packets, in :mod:`reallymuted.analysis.telemetry`).
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from reallymuted.analysis import pcapread
from reallymuted.analysis.evidence import label_states, load_manifest, mute_segments
from reallymuted.analysis.g711 import DECODE as G711
from reallymuted.analysis.g711 import PAYLOAD_TYPES as G711_PAYLOAD_TYPES
from reallymuted.io import DataError, read_jsonl, write_parquet

log = logging.getLogger(__name__)

# column name -> tshark field. Multi-valued fields (several header extensions) are joined by ";".
TSHARK_FIELDS = {
    "time": "frame.time_epoch",
    "frame_len": "frame.len",
    "protocols": "frame.protocols",
    "ip_src": "ip.src",
    "ip_dst": "ip.dst",
    "ip6_src": "ipv6.src",
    "ip6_dst": "ipv6.dst",
    "udp_src": "udp.srcport",
    "udp_dst": "udp.dstport",
    "udp_len": "udp.length",
    "tcp_src": "tcp.srcport",
    "tcp_dst": "tcp.dstport",
    "tcp_len": "tcp.len",
    "rtp_pt": "rtp.p_type",
    "rtp_ssrc": "rtp.ssrc",
    "rtp_seq": "rtp.seq",
    "rtp_ext_id": "rtp.ext.rfc5285.id",
    "rtp_ext_data": "rtp.ext.rfc5285.data",
    "rtp_payload": "rtp.payload",
    "http_method": "http.request.method",
    "http_uri": "http.request.uri",
}
# Protocols named in frame.protocols, most specific first: the first present names the packet.
PROTOCOL_ORDER = ["rtcp", "rtp", "stun", "dtls", "http", "tls", "dns", "sip", "udp", "tcp"]
PACKET_COLUMNS = [
    "t",
    "time_epoch",
    "direction",
    "protocol",
    "src",
    "dst",
    "sport",
    "dport",
    "frame_len",
    "payload_len",
    "rtp_pt",
    "rtp_ssrc",
    "rtp_seq",
    "audio_level_dbov",
    "voice_activity",
    "payload_rms",
    "http_method",
    "http_uri",
]


def tshark_command(pcap: str | Path, decode_as: list[str] | None = None) -> list[str]:
    command = [
        "tshark",
        "-r",
        str(pcap),
        "-n",
        "-o",
        "rtp.heuristic_rtp:TRUE",
        "-T",
        "fields",
        "-E",
        "header=n",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=;",
        "-E",
        "quote=n",
    ]
    for rule in decode_as or []:
        command += ["-d", rule]
    for field in TSHARK_FIELDS.values():
        command += ["-e", field]
    return command


def run_tshark(pcap: str | Path, decode_as: list[str] | None = None) -> bytes:
    if not Path(pcap).is_file():
        raise DataError(f"{pcap}: capture file missing")
    run = subprocess.run(tshark_command(pcap, decode_as), capture_output=True, check=False)
    # tshark exits 2 on a capture cut off mid-packet, after printing every complete packet:
    # keep those and say so, rather than losing the session.
    if run.returncode not in (0, 2) or (run.returncode == 2 and not run.stdout):
        raise DataError(f"{pcap}: tshark failed ({run.stderr.decode(errors='replace').strip()})")
    if run.returncode == 2:
        log.warning("%s: %s", pcap, run.stderr.decode(errors="replace").strip())
    return run.stdout


NUMERIC_FIELDS = {
    "time",
    "frame_len",
    "udp_src",
    "udp_dst",
    "udp_len",
    "tcp_src",
    "tcp_dst",
    "tcp_len",
    "rtp_pt",
    "rtp_seq",
}


def parse_fields(raw: bytes) -> pd.DataFrame:
    """tshark's tab-separated fields as columns, numbers parsed while reading (pyarrow)."""
    import pyarrow as pa
    from pyarrow import csv

    def read(numeric: bool) -> pd.DataFrame:
        types = {
            c: pa.float64() if numeric and c in NUMERIC_FIELDS else pa.string()
            for c in TSHARK_FIELDS
        }
        return csv.read_csv(
            pa.BufferReader(raw),
            read_options=csv.ReadOptions(column_names=list(TSHARK_FIELDS)),
            parse_options=csv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=csv.ConvertOptions(
                column_types=types, null_values=[""], strings_can_be_null=True
            ),
        ).to_pandas(types_mapper={pa.string(): pd.StringDtype()}.get)

    try:
        return read(numeric=True)
    except pa.ArrowInvalid:
        # a numeric field seen twice in one packet ("1;2", e.g. an ICMP error quoting a UDP
        # header): read everything as text and keep each field's first occurrence
        table = read(numeric=False)
        for column in NUMERIC_FIELDS:
            table[column] = pd.to_numeric(table[column].str.split(";").str[0], errors="coerce")
        return table


def _first_protocol(protocols: pd.Series) -> pd.Series:
    """The most specific protocol of each packet's ``frame.protocols`` chain."""

    def first(chain: str) -> str:
        names = chain.split(":")
        return next((p for p in PROTOCOL_ORDER if p in names), names[-1])

    # few distinct chains in a capture: decide each once
    return protocols.fillna("").map({c: first(c) for c in protocols.dropna().unique()}).fillna("")


HEX_BYTE = {f"{b:02x}": b for b in range(256)}


def _audio_levels(ext_ids: pd.Series, ext_data: pd.Series, level_ext_id: int) -> pd.DataFrame:
    """RFC 6464 client-to-mixer audio level: one byte, V flag in the top bit, level in -dBov."""
    pairs = pd.DataFrame({"id": ext_ids.str.split(";"), "data": ext_data.str.split(";")}).dropna()
    try:
        pairs = pairs.explode(["id", "data"])
    except ValueError:  # a packet whose extension ids and data do not pair up: skip its level
        pairs = pairs[pairs["id"].str.len() == pairs["data"].str.len()].explode(["id", "data"])
    hit = pairs[pairs["id"] == str(level_ext_id)]
    hit = hit[~hit.index.duplicated()]
    byte = hit["data"].str.replace(":", "", regex=False).str[:2].str.lower().map(HEX_BYTE)
    byte = byte.dropna()
    values = byte.to_numpy(dtype=np.int64)
    levels = pd.Series(np.nan, index=ext_ids.index)
    voice = pd.Series(np.nan, index=ext_ids.index)
    levels.loc[byte.index] = -(values & 0x7F)
    voice.loc[byte.index] = values >> 7
    return pd.DataFrame({"audio_level_dbov": levels, "voice_activity": voice})


def _payload_rms(payload_hex: pd.Series, payload_type: pd.Series) -> np.ndarray:
    """RMS of the samples carried by plain G.711 packets (NaN for anything else)."""
    rms = np.full(len(payload_hex), np.nan)
    g711 = np.flatnonzero(payload_type.isin(list(G711_PAYLOAD_TYPES)).to_numpy(dtype=bool))
    for i in g711:  # only plain G.711 packets carry samples we can read
        hexes = payload_hex.iat[i]
        if isinstance(hexes, str) and hexes:
            data = bytes.fromhex(hexes.split(";")[0].replace(":", ""))
            samples = G711[G711_PAYLOAD_TYPES[int(payload_type.iat[i])]][
                np.frombuffer(data, dtype=np.uint8)
            ]
            rms[i] = float(np.sqrt(np.mean(samples**2))) if len(samples) else np.nan
    return rms


def read_packets(
    pcap: str | Path,
    start_epoch: float,
    client_ports: set[int] | None = None,
    audio_level_ext_id: int = 1,
    decode_as: list[str] | None = None,
    server_ports: set[int] | None = None,
    reader: str = "native",
) -> pd.DataFrame:
    """One row per packet, time ``t`` in seconds since the session start.

    ``reader`` is ``native`` (:mod:`reallymuted.analysis.pcapread`, several times faster) or
    ``tshark`` (``tshark -T fields``, the oracle the native reader is tested against).

    ``direction`` is ``sent`` when the source port is one of the measured client's ports or
    the destination is one of the servers it talks to from ephemeral ports (e.g. a telemetry
    collector), ``received`` for the reverse, and ``other`` otherwise (e.g. the peer's own
    traffic); with no ports given every packet is ``unknown``.
    """
    if reader == "native":
        out = pcapread.packet_table(pcap, audio_level_ext_id, decode_as)
        out["t"] = out["time_epoch"] - start_epoch
    elif reader == "tshark":
        raw = run_tshark(pcap, decode_as)
        if not raw.strip():
            return pd.DataFrame(columns=PACKET_COLUMNS)
        out = _tshark_table(parse_fields(raw), start_epoch, audio_level_ext_id)
    else:
        raise ValueError(f"reader {reader!r}: expected 'native' or 'tshark'")
    if client_ports or server_ports:
        ports, servers = list(client_ports or ()), list(server_ports or ())
        to_client = out.dport.isin(ports).fillna(False) | out.sport.isin(servers).fillna(False)
        from_client = out.sport.isin(ports).fillna(False) | out.dport.isin(servers).fillna(False)
        out["direction"] = np.select([from_client, to_client], ["sent", "received"], "other")
    else:
        out["direction"] = "unknown"
    return out[PACKET_COLUMNS]


def _tshark_table(table: pd.DataFrame, start_epoch: float, audio_level_ext_id: int) -> pd.DataFrame:
    """tshark's field columns as the packet table (without ``direction``)."""
    number = table
    sport = number["udp_src"].fillna(number["tcp_src"])
    dport = number["udp_dst"].fillna(number["tcp_dst"])
    payload_len = (number["udp_len"] - 8).fillna(number["tcp_len"])
    out = pd.DataFrame(
        {
            "time_epoch": number["time"],
            "t": number["time"] - start_epoch,
            "protocol": _first_protocol(table["protocols"]),
            "src": table["ip_src"].fillna(table["ip6_src"]),
            "dst": table["ip_dst"].fillna(table["ip6_dst"]),
            "sport": sport.astype("Int64"),
            "dport": dport.astype("Int64"),
            "frame_len": number["frame_len"].astype("Int64"),
            "payload_len": payload_len.astype("Int64"),
            "rtp_pt": number["rtp_pt"].astype("Int64"),
            "rtp_ssrc": table["rtp_ssrc"],
            "rtp_seq": number["rtp_seq"].astype("Int64"),
            "http_method": table["http_method"],
            "http_uri": table["http_uri"],
        }
    )
    out = pd.concat(
        [out, _audio_levels(table["rtp_ext_id"], table["rtp_ext_data"], audio_level_ext_id)],
        axis=1,
    )
    out["payload_rms"] = _payload_rms(table["rtp_payload"], out["rtp_pt"])
    return out


def read_mic_trace(path: str | Path) -> pd.DataFrame:
    """``mic_trace.jsonl`` → one row per read; ``witness`` is ``os`` (api ``os:…``) or ``app``."""
    rows = read_jsonl(path)
    columns = ["t", "witness", "api", "pid", "tid", "bytes", "frames", "dropped", "peak", "rms"]
    if not rows:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(rows)
    if "kind" in table:
        # host agents also log other calls on the capture path (Start, Stop, ReleaseBuffer…):
        # only rows where the app received samples are reads
        table = table[table["kind"].fillna("read") == "read"]
    for column in columns:
        if column not in table:
            table[column] = np.nan
    if table["t"].isna().any() or table["api"].isna().any():
        raise DataError(f"{path}: every line needs 't' and 'api'")
    table["witness"] = np.where(table["api"].astype(str).str.startswith("os:"), "os", "app")
    return table[columns].sort_values("t", kind="stable").reset_index(drop=True)


def extract_session(
    session_dir: str | Path, packets_out: str | Path, reads_out: str | Path
) -> None:
    """Write ``packets.parquet`` and ``mic_reads.parquet`` for one session directory."""
    session = Path(session_dir)
    manifest = load_manifest(session)
    events = read_jsonl(session / "events.jsonl")
    segments = mute_segments(events)
    client = manifest.get("client", {})
    packets = read_packets(
        session / "traffic.pcapng",
        start_epoch=float(manifest["start_epoch"]),
        client_ports=set(client.get("ports", [])) or None,
        audio_level_ext_id=int(client.get("audio_level_ext_id", 1)),
        decode_as=client.get("decode_as"),
        server_ports=set(client.get("server_ports", [])) or None,
    )
    packets["state"] = label_states(packets["t"], segments)
    reads = read_mic_trace(session / "mic_trace.jsonl")
    reads["state"] = label_states(reads["t"], segments)
    write_parquet(packets_out, packets)
    write_parquet(reads_out, reads)
    log.info("%s: %d packets, %d mic reads", session, len(packets), len(reads))
