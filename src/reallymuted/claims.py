"""The claims table: each of the paper's numbers beside the value this pipeline computed.

The expected values come from ``workflow/resources/paper_claims.yaml``; computed values only
from ``results/values/<stage>.json`` files written by the stages. A claim whose values were
not computed (its stage is off) gets no row. A difference is reported, never tuned away.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from reallymuted.config import load_yaml
from reallymuted.io import DataError, write_csv, write_text

log = logging.getLogger(__name__)

COLUMNS = ["id", "claim", "paper_value", "computed_value", "verdict", "note", "source"]
Values = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class PartResult:
    label: str
    shown: str  # the computed value as displayed (in the claim's unit)
    ok: bool
    gap: str  # how far off, empty when ok


def load_values(paths: list[str | Path]) -> Values:
    """``{stem: {key: value}}`` from the stages' values files."""
    values: Values = {}
    for path in paths:
        try:
            values[Path(path).stem] = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg})") from None
    return values


def lookup(values: Values, ref: str) -> Any:
    stem, _, key = ref.partition(".")
    if stem not in values or key not in values[stem]:
        raise KeyError(ref)
    return values[stem][key]


def _number(value: Any, unit: str) -> float:
    return float(value) * 100 if unit == "percent" else float(value)


def _fmt(value: float, unit: str) -> str:
    if unit == "count":
        return f"{value:g}"
    if unit == "percent":
        return f"{value:.2f} %"
    return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:.2f}"


def evaluate_part(part: dict[str, Any], values: Values) -> PartResult:
    unit = part.get("unit", "ratio")
    label = part.get("label", "")
    computed = lookup(values, part["computed"])
    if unit == "text":
        ok = str(computed) == str(part["expected"])
        gap = "" if ok else f"{computed} ≠ {part['expected']}"
        return PartResult(label, str(computed), ok, gap)
    if unit == "set":
        got = sorted(map(str, computed)) if isinstance(computed, list) else [str(computed)]
        want = sorted(map(str, part["expected"]))
        ok = got == want
        gap = "" if ok else f"{{{', '.join(got)}}} ≠ {{{', '.join(want)}}}"
        return PartResult(label, ", ".join(got), ok, gap)
    if "range" in part:
        lo, hi = part["range"]
        got_values = computed if isinstance(computed, list) else [computed]
        numbers = [_number(v, unit) for v in got_values]
        outside = [v for v in numbers if not lo <= v <= hi]
        ends = sorted({min(numbers), max(numbers)})
        shown = "–".join(_fmt(v, unit) for v in ends)
        listed = ", ".join(_fmt(v, unit) for v in outside)
        gap = f"{listed} outside {lo}–{hi}" if outside else ""
        return PartResult(label, shown, not outside, gap)
    got = _number(computed, unit)
    expected = float(part["expected"])
    delta = got - expected
    ok = not math.isnan(got) and abs(delta) <= float(part.get("tolerance", 0)) + 1e-12
    suffix = " pp" if unit == "percent" else ""
    return PartResult(label, _fmt(got, unit), ok, "" if ok else f"{delta:+.4g}{suffix}")


def _swap_note(claim: dict[str, Any], values: Values) -> str:
    """If the computed values match the paper's only under a permutation of the parts, say so.

    A published table with two numbers exchanged looks exactly like this, and the data can show
    it, so it is worth naming rather than leaving as two unexplained differences.
    """
    parts = [p for p in claim["parts"] if "expected" in p and p.get("unit") not in ("text", "set")]
    if len(parts) < 2 or len(parts) > 6:
        return ""
    got = [_number(lookup(values, p["computed"]), p.get("unit", "ratio")) for p in parts]
    expected = [float(p["expected"]) for p in parts]
    tolerance = [float(p.get("tolerance", 0)) + 1e-12 for p in parts]
    for order in itertools.permutations(range(len(parts))):
        if order == tuple(range(len(parts))):
            continue
        if all(abs(got[i] - expected[j]) <= tolerance[j] for i, j in enumerate(order)):
            moved = [
                f"computed {parts[i].get('label', i)} matches the paper's "
                f"{parts[j].get('label', j)}"
                for i, j in enumerate(order)
                if i != j
            ]
            return "; ".join(moved) + ": the published values appear exchanged"
    return ""


def _fill(template: str, values: Values) -> str:
    def replace(match: re.Match[str]) -> str:
        try:
            value = lookup(values, match.group(1))
        except KeyError:
            return match.group(0)
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    return re.sub(r"\{([a-z0-9_]+\.[a-z0-9_]+)\}", replace, template).strip()


def evaluate_claim(claim: dict[str, Any], values: Values) -> dict[str, str] | None:
    """One row of the claims table, or None when the data for this claim was not computed."""
    try:
        results = [evaluate_part(part, values) for part in claim["parts"]]
    except KeyError as missing:
        log.info("claim %s: no computed value %s (stage off); row omitted", claim["id"], missing)
        return None
    labelled = len(results) > 1
    computed = " / ".join(r.shown for r in results)
    differs = [r for r in results if not r.ok]
    if not differs:
        tolerances = {p.get("tolerance") for p in claim["parts"] if p.get("tolerance")}
        if tolerances:
            unit = " pp" if _percent(claim) else ""
            verdict = f"reproduced (within ±{max(tolerances):g}{unit})"
        elif any("range" in p for p in claim["parts"]):
            verdict = "reproduced (within the published range)"
        else:
            verdict = "reproduced (exact)"
    else:
        verdict = "differs: " + "; ".join(
            (f"{r.label} " if labelled and r.label else "") + r.gap for r in differs
        )
    notes = [_fill(claim.get("note", ""), values)]
    if differs:
        notes += [_fill(claim.get("note_if_differs", ""), values), _swap_note(claim, values)]
    stems = sorted({p["computed"].split(".")[0] for p in claim["parts"]})
    sources = sorted({str(values[s].get("source", "unknown")) for s in stems})
    return {
        "id": claim["id"],
        "claim": claim["claim"],
        "paper_value": str(claim["paper_value"]),
        "computed_value": computed,
        "verdict": verdict,
        "note": "; ".join(n for n in notes if n),
        "source": ", ".join(sources),
    }


def _percent(claim: dict[str, Any]) -> bool:
    return any(p.get("unit") == "percent" for p in claim["parts"])


def build_table(claims_path: str | Path, value_paths: list[str | Path]) -> pd.DataFrame:
    claims = load_yaml(claims_path)
    values = load_values(value_paths)
    rows = [row for claim in claims if (row := evaluate_claim(claim, values)) is not None]
    return pd.DataFrame(rows, columns=COLUMNS)


def to_markdown(table: pd.DataFrame) -> str:
    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [
        '# Claims of "Are You Really Muted?" (PoPETs 2022) against this pipeline',
        "",
        "`paper_value` is the published value; `computed_value` is what this pipeline computed "
        "from the evidence named in `source`. Tolerances are stated in the verdict.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(cell(row[c]) for c in COLUMNS) + " |")
    counts = table.verdict.str.split(":").str[0].str.split(" ").str[0].value_counts()
    lines += ["", "Summary: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())), ""]
    return "\n".join(lines)


def write_claims(
    claims_path: str | Path, value_paths: list[str | Path], csv_out: str | Path, md_out: str | Path
) -> pd.DataFrame:
    table = build_table(claims_path, value_paths)
    write_csv(csv_out, table)
    write_text(md_out, to_markdown(table))
    log.info("claims: %d rows, %s", len(table), dict(table.verdict.str[:7].value_counts()))
    return table
