"""The native packet reader checked against tshark, field by field, on real captures.

``extract.read_packets`` reads a capture with :mod:`reallymuted.analysis.pcapread` (native,
the default) or with ``tshark -T fields`` (the oracle); the tests compare the two on every
capture they build or leave behind (tests/conftest.py), and :func:`compare_readers` can be
run on any capture of a study to check that no known difference of the native reader
occurs in it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from reallymuted.analysis.extract import read_packets
from reallymuted.io import DataError


def compare_readers(pcap: str | Path, limit: int = 20, **options: object) -> list[str]:
    """Field-by-field differences between the native reader and tshark on one capture, as
    ``"packet N column: native=… tshark=…"`` lines (at most ``limit``); [] when they agree.

    The G.711 RMS may differ in the last bits (the sums run in another order): it is compared
    with a relative tolerance of 1e-9; every other field must be equal.
    """
    tables, errors = {}, {}
    for reader in ("native", "tshark"):
        try:
            tables[reader] = read_packets(pcap, 0.0, reader=reader, **options)
        except DataError as error:  # an unreadable file must be refused by both
            errors[reader] = str(error)
    if errors:
        return [] if len(errors) == 2 else [f"{pcap}: only one reader failed: {errors}"]
    native, oracle = tables["native"], tables["tshark"]
    if len(native) != len(oracle):
        return [f"{pcap}: {len(native)} packets native, {len(oracle)} tshark"]
    found = []
    for column in oracle.columns:
        a, o = native[column].reset_index(drop=True), oracle[column].reset_index(drop=True)
        missing = a.isna().to_numpy() & o.isna().to_numpy()
        if column == "payload_rms":
            same = np.isclose(a.to_numpy(float), o.to_numpy(float), rtol=1e-9, atol=0)
        else:
            same = (a.astype(object) == o.astype(object)).fillna(False).to_numpy(bool)
        for i in np.flatnonzero(~(same | missing)):
            found.append(f"{pcap}: packet {i + 1} {column}: native={a[i]!r} tshark={o[i]!r}")
    return found[:limit] + ([f"… {len(found) - limit} more"] if len(found) > limit else [])


def compare_readers_under(folder: Path, limit: int = 5) -> list[str]:
    """:func:`compare_readers` on every ``.pcap`` and ``.pcapng`` file under ``folder``
    (sub-folders included), in path order, at most ``limit`` lines per capture. A file with
    the same bytes as one already compared is not read again: a test that lays out a whole
    study's evidence as copies (or as empty files) would otherwise run tshark hundreds of
    times for one answer."""
    captures = [p for p in folder.rglob("*.pcap*") if p.suffix in (".pcap", ".pcapng")]
    compared: set[str] = set()
    differences = []
    for capture in sorted(captures):
        digest = hashlib.sha256(capture.read_bytes()).hexdigest()
        if digest not in compared:
            compared.add(digest)
            differences += compare_readers(capture, limit=limit)
    return differences
