"""How a rebuilt output compares with its archived version: bytes, and pixels for a PNG."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path


@dataclasses.dataclass
class Comparison:
    """How one rebuilt file compares with its archived version."""

    path: str
    status: str  # identical | pixels-within-tolerance | differs | missing
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("identical", "pixels-within-tolerance")


def compare_png(expected: Path, actual: Path, tolerance: int) -> Comparison:
    """Pixel comparison of two PNGs: the largest per-channel difference, the pixels that differ."""
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(expected).convert("RGBA"), dtype=np.int16)
    b = np.asarray(Image.open(actual).convert("RGBA"), dtype=np.int16)
    name = str(actual)
    if a.shape != b.shape:
        return Comparison(
            name, "differs", f"size {a.shape[1]}x{a.shape[0]} -> {b.shape[1]}x{b.shape[0]}"
        )
    diff = np.abs(a - b).max(axis=2)
    worst, count = int(diff.max()), int((diff > 0).sum())
    detail = f"max channel difference {worst}/255 in {count} of {diff.size} pixels"
    if worst == 0:
        return Comparison(name, "pixels-within-tolerance", "same pixels, different bytes")
    return Comparison(name, "pixels-within-tolerance" if worst <= tolerance else "differs", detail)


def compare_file(expected: Path, actual: Path, tolerance: int = 0) -> Comparison:
    """Byte comparison; PNGs that differ in bytes get a pixel comparison."""
    if not actual.is_file():
        return Comparison(str(actual), "missing", "not rebuilt")
    if expected.read_bytes() == actual.read_bytes():
        return Comparison(str(actual), "identical")
    if expected.suffix == ".png":
        return compare_png(expected, actual, tolerance)
    size = f"{expected.stat().st_size} -> {actual.stat().st_size} bytes"
    if expected.suffix in (".csv", ".md", ".json", ".jsonl", ".tsv", ".txt"):
        old = expected.read_text(errors="replace").splitlines()
        new = actual.read_text(errors="replace").splitlines()
        first = next(
            (i for i, (x, y) in enumerate(zip(old, new, strict=False)) if x != y),
            min(len(old), len(new)),
        )
        return Comparison(str(actual), "differs", f"{size}; first different line {first + 1}")
    return Comparison(str(actual), "differs", size)


def compare_trees(
    expected_root: Path, actual_root: Path, names: Iterable[str], tolerance: int = 0
) -> list[Comparison]:
    """Compare each relative path under two roots; paths in the result are relative."""
    out = []
    for name in sorted(names):
        result = compare_file(expected_root / name, actual_root / name, tolerance)
        out.append(dataclasses.replace(result, path=name))
    return out
