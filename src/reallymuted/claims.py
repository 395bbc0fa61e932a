"""The claims table: each of the paper's claims beside the value this pipeline computed.

The expected values come from ``workflow/resources/paper_claims.yaml``; computed values only
from ``results/values/<stage>.json`` files written by the stages. Every claim gets a row: a
verdict, or "not measured here" with the reason (its stage is switched off, the sessions it
needs did not run, or the pipeline cannot compute it). A value missing although its stage ran
is an error naming the claim and the file. A difference is reported, never tuned away.

Verdict classes (``VERDICT_CLASSES``): ``reproduced`` needs evidence other than a model of an
app; a claim checked only on ``testbed-profile`` evidence (the project's model of an app's
published behaviour) is an instrument check, never "reproduced".
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from reallymuted.config import load_yaml
from reallymuted.io import DataError, write_csv, write_text

log = logging.getLogger(__name__)

COLUMNS = ["id", "claim", "paper_value", "computed_value", "verdict", "note", "source"]
Values = dict[str, dict[str, Any]]

# Evidence that is a model of an app, not the app: a claim resting on it alone is checked as
# an instrument check (does the capture and analysis see what the model does?), not reproduced.
MODEL_SOURCES = frozenset({"testbed-profile"})
PASSED_ON_MODEL = "instrument check passed (model, not the app)"
FAILED_ON_MODEL = "instrument check failed (model, not the app)"
NOT_MEASURED = "not measured here"
# In the order the summary line lists them; "reproduced in part" before "reproduced" so that
# the class of a verdict is its longest matching prefix.
VERDICT_CLASSES = (
    "reproduced",
    "reproduced in part",
    "differs",
    PASSED_ON_MODEL,
    FAILED_ON_MODEL,
    NOT_MEASURED,
)


@dataclass(frozen=True)
class PartResult:
    label: str
    shown: str  # the computed value as displayed (in the claim's unit)
    ok: bool
    gap: str  # how far off, empty when ok
    source: str  # the evidence behind the computed value
    judged: str  # how it was compared: "exact", "within ±5 pp", "within the published range"


@dataclass(frozen=True)
class Pending:
    """A part of a claim this run did not measure, and why."""

    label: str
    reason: str


def load_values(paths: Iterable[str | Path]) -> Values:
    """``{stem: {key: value}}`` from the stages' values files."""
    values: Values = {}
    for path in paths:
        try:
            values[Path(path).stem] = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg})") from None
    return values


@dataclass(frozen=True)
class Evidence:
    """What a run computed: its values files, their paths, and why the others are absent."""

    values: Values
    paths: Mapping[str, str]  # stem -> the file it was read from
    absent: Mapping[str, str]  # stem -> why this run has no such file (e.g. stage off)


def lookup(values: Values, ref: str) -> Any:
    stem, _, key = ref.partition(".")
    if stem not in values or key not in values[stem]:
        raise KeyError(ref)
    return values[stem][key]


def _has(values: Values, ref: str) -> bool:
    try:
        lookup(values, ref)
    except KeyError:
        return False
    return True


def part_source(values: Values, ref: str) -> str:
    """The source of one computed value: the file's ``source_of`` entry for the key when the
    file mixes sources (the testbed's values hold real clients and models), else its
    ``source``."""
    stem, _, key = ref.partition(".")
    per_key = values[stem].get("source_of") or {}
    if key in per_key:
        return str(per_key[key])
    source = str(values[stem].get("source", "unknown"))
    if "," in source:  # a file of several sources must say which one a key comes from
        raise DataError(f"{stem}.json: sources {source}, but no source_of entry for {key!r}")
    return source


def _number(value: Any, unit: str) -> float:
    return float(value) * 100 if unit == "percent" else float(value)


def _fmt(value: float, unit: str) -> str:
    if unit == "count":
        return f"{value:g}"
    if unit == "percent":
        return f"{value:.2f} %"
    return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:.2f}"


def _judged(part: dict[str, Any]) -> str:
    """How a part is compared, said the way the verdict says it."""
    if "range" in part:
        lo, hi = part["range"]
        if part.get("range_by", "paper") == "project":
            return f"within the project's range {lo:g}–{hi:g} (the paper gives no number)"
        return "within the published range"
    tolerance = float(part.get("tolerance", 0) or 0)
    if tolerance and part.get("unit") not in ("text", "set"):
        return f"within ±{tolerance:g}" + (" pp" if part.get("unit") == "percent" else "")
    return "exact"


def evaluate_part(part: dict[str, Any], values: Values) -> PartResult:
    unit = part.get("unit", "ratio")
    label = part.get("label", "")
    computed = lookup(values, part["computed"])
    source, judged = part_source(values, part["computed"]), _judged(part)
    if unit == "text":
        ok = str(computed) == str(part["expected"])
        gap = "" if ok else f"{computed} ≠ {part['expected']}"
        return PartResult(label, str(computed), ok, gap, source, judged)
    if unit == "set":
        got = sorted(map(str, computed)) if isinstance(computed, list) else [str(computed)]
        want = sorted(map(str, part["expected"]))
        ok = got == want
        gap = "" if ok else f"{{{', '.join(got)}}} ≠ {{{', '.join(want)}}}"
        return PartResult(label, ", ".join(got), ok, gap, source, judged)
    if "range" in part:
        lo, hi = part["range"]
        got_values = computed if isinstance(computed, list) else [computed]
        numbers = [_number(v, unit) for v in got_values]
        outside = [v for v in numbers if not lo <= v <= hi]
        ends = sorted({min(numbers), max(numbers)})
        shown = "–".join(_fmt(v, unit) for v in ends)
        listed = ", ".join(_fmt(v, unit) for v in outside)
        gap = f"{listed} outside {lo}–{hi}" if outside else ""
        return PartResult(label, shown, not outside, gap, source, judged)
    got = _number(computed, unit)
    expected = float(part["expected"])
    delta = got - expected
    ok = not math.isnan(got) and abs(delta) <= float(part.get("tolerance", 0)) + 1e-12
    suffix = " pp" if unit == "percent" else ""
    gap = "" if ok else f"{delta:+.4g}{suffix}"
    return PartResult(label, _fmt(got, unit), ok, gap, source, judged)


def _pending(claim: dict[str, Any], part: dict[str, Any], evidence: Evidence) -> Pending | None:
    """Why this run did not measure a part, or None when it did.

    A part is not measured when the claims file says the pipeline cannot compute it
    (``not_measured``), when its values file is absent for a stated reason (stage off), or when
    the sessions it ``needs`` did not run. Any other missing value is an error: its stage ran,
    so a value it should have written is not there.
    """
    label = part.get("label", claim["id"])
    if "not_measured" in part:
        return Pending(label, str(part["not_measured"]))
    stem, _, key = part["computed"].partition(".")
    if stem not in evidence.values:
        if stem in evidence.absent:
            return Pending(label, evidence.absent[stem])
        raise DataError(
            f"claim {claim['id']}: needs {part['computed']}, but {stem}.json is not an input of "
            "this run and no reason is given why (stage switches: workflow/rules/claims.smk)"
        )
    found = evidence.values[stem]
    if key in found:
        return None
    where = evidence.paths.get(stem, stem + ".json")
    unlisted = sorted(set(part.get("needs") or {}) - set(found))
    if unlisted:  # a file that does not say what it covers cannot excuse a missing value
        raise DataError(
            f"claim {claim['id']}: {where} has no value {key!r} and does not list its "
            f"{', '.join(unlisted)}"
        )
    unmet = [
        str(item)
        for field, items in (part.get("needs") or {}).items()
        for item in (items if isinstance(items, list) else [items])
        if item not in (found.get(field) or [])
    ]
    if unmet:
        return Pending(label, part.get("not_run") or f"no {', '.join(unmet)} session in this run")
    raise DataError(
        f"claim {claim['id']}: {where} has no value {key!r}, although the stage that writes it ran"
    )


def _swap_note(claim: dict[str, Any], values: Values) -> str:
    """If the computed values match the paper's only under a permutation of the parts, say so.

    A published table with two numbers exchanged looks exactly like this, and the data can show
    it, so it is worth naming rather than leaving as two unexplained differences.
    """
    parts = [p for p in claim["parts"] if "expected" in p and p.get("unit") not in ("text", "set")]
    if len(parts) < 2 or len(parts) > 6:
        return ""
    try:
        got = [_number(lookup(values, p["computed"]), p.get("unit", "ratio")) for p in parts]
    except KeyError:  # a part not measured here: nothing to permute
        return ""
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


PLACEHOLDER = re.compile(r"\{([a-z0-9_]+\.[a-z0-9_]+)\}")


def _fill(template: str, values: Values) -> str:
    """The note with the values it names (a value this run lacks stays a placeholder)."""

    def replace(match: re.Match[str]) -> str:
        try:
            value = lookup(values, match.group(1))
        except KeyError:
            return match.group(0)
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    return PLACEHOLDER.sub(replace, template).strip()


def _judgement(parts: list[dict[str, Any]], results: list[PartResult]) -> str:
    """How the measured parts were judged: the widest tolerance, the ranges, else exact; and
    which expected values are the project's rather than the paper's."""
    kinds = list(dict.fromkeys(r.judged for r in results))
    tolerances = [k for k in kinds if k.startswith("within ±")]
    if tolerances:  # one tolerance said once: the widest (same unit within a claim)
        widest = max(tolerances, key=lambda k: float(k.split("±")[1].split()[0]))
        kinds = [widest if k.startswith("within ±") else k for k in kinds]
        kinds = list(dict.fromkeys(kinds))
    said = [k for k in kinds if k != "exact"]
    if "exact" in kinds:
        said.append("others exact" if said else "exact")
    said += [
        f"{r.label or 'the value'} against the project's expected value, not the paper's"
        for p, r in zip(parts, results, strict=True)
        if p.get("expected_by") == "project"
    ]
    return "; ".join(said)


Outcome = PartResult | Pending


def verdict(claim: dict[str, Any], outcomes: list[Outcome]) -> str:
    """The verdict sentence for a claim's parts in order; its class (``VERDICT_CLASSES``) is
    what it starts with."""
    results = [o for o in outcomes if isinstance(o, PartResult)]
    pending = [o for o in outcomes if isinstance(o, Pending)]
    labelled = len(outcomes) > 1
    not_here = [
        f"{NOT_MEASURED}: " + (f"{p.label} ({p.reason})" if labelled and results else p.reason)
        for p in pending
    ]
    if not results:
        return "; ".join(dict.fromkeys(not_here))
    on_model = all(r.source in MODEL_SOURCES for r in results)
    differs = [r for r in results if not r.ok]
    if differs:
        kind = FAILED_ON_MODEL if on_model else "differs"
        gaps = [(f"{r.label} " if labelled and r.label else "") + r.gap for r in differs]
        return f"{kind}: " + "; ".join(gaps + not_here)
    parts = zip(claim["parts"], outcomes, strict=True)
    measured = [p for p, o in parts if isinstance(o, PartResult)]
    details = [claim.get("scope", ""), _judgement(measured, results)]
    details += [f"{NOT_MEASURED}: {p.label}" for p in pending]
    said = "; ".join(d for d in details if d)
    if on_model:
        return f"{PASSED_ON_MODEL}: {said}"
    return f"{'reproduced in part' if pending else 'reproduced'} ({said})"


def verdict_class(text: str) -> str:
    """The class a verdict belongs to: the longest class name it starts with."""
    matches = [c for c in VERDICT_CLASSES if text.startswith(c)]
    if not matches:
        raise ValueError(f"verdict {text!r} is of no known class")
    return max(matches, key=len)


def evaluate_claim(claim: dict[str, Any], evidence: Evidence) -> dict[str, str]:
    """One row of the claims table: computed, or "not measured here" with the reason."""
    values = evidence.values
    outcomes: list[Outcome] = []
    for part in claim["parts"]:
        why = _pending(claim, part, evidence)
        outcomes.append(evaluate_part(part, values) if why is None else why)
    results = [o for o in outcomes if isinstance(o, PartResult)]
    if not results:
        log.info("claim %s: %s", claim["id"], verdict(claim, outcomes))
    templates = [claim.get("note", "")]
    if any(not r.ok for r in results):
        templates.append(claim.get("note_if_differs", ""))
    notes, quoted = [], set()
    for template in templates:
        note = _fill(template, values)
        if not results and PLACEHOLDER.search(note):
            continue  # a note quoting values of a run that did not measure the claim: left out
        notes.append(PLACEHOLDER.sub("[not in this run]", note))
        # the values a note quotes are evidence too: their sources join the row's
        quoted |= {part_source(values, r) for r in PLACEHOLDER.findall(template) if _has(values, r)}
    if any(not r.ok for r in results):
        notes.append(_swap_note(claim, values))
    return {
        "id": claim["id"],
        "claim": claim["claim"],
        "paper_value": str(claim["paper_value"]),
        "computed_value": " / ".join(
            o.shown if isinstance(o, PartResult) else "not measured" for o in outcomes
        ),
        "verdict": verdict(claim, outcomes),
        "note": "; ".join(n for n in notes if n),
        "source": ", ".join(sorted({r.source for r in results} | quoted)) or "none",
    }


# The stages whose values files the claims cite, per file stem.
STAGE_OF = {
    "userstudy": "reference",
    "telemetry_reference": "reference",
    "classifier_reference": "reference",
    "testbed": "sessions",
    "sdk": "sessions",
    "attack": "attack",
}


def absent_reasons(
    stages: Mapping[str, bool],
    attack_selected: bool,
    value_files: Iterable[str | Path],
    sdk_selected: bool = True,
) -> dict[str, str]:
    """Why a run has no values file of a stage, per stem the run lacks (the rule's
    ``value_files`` are the ones it has): the claims needing it say "not measured here" so."""
    present = {Path(path).stem for path in value_files}
    reasons = {}
    for stem, stage in STAGE_OF.items():
        if stem in present:
            continue
        if not stages.get(stage):
            reasons[stem] = f"stage {stage} switched off (config.yaml stages.{stage})"
        elif stage == "attack" and not stages.get("sessions"):
            reasons[stem] = "stage sessions switched off (the attack runs on its sessions)"
        elif stage == "attack" and not attack_selected:
            reasons[stem] = "the attack's telemetry apps are not in sessions.select"
        elif stem == "sdk" and not sdk_selected:
            reasons[stem] = "no session of a vendor's library (driver sdk, sdk-preview) here"
        # otherwise the stage ran and should have written it: no reason, so the claims fail
    return reasons


def build_table(
    claims_path: str | Path,
    value_paths: Iterable[str | Path],
    absent: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """The claims table; ``absent`` says, per values file stem this run does not have, why."""
    claims = load_yaml(claims_path)
    paths = {Path(p).stem: str(p) for p in value_paths}
    evidence = Evidence(load_values(paths.values()), paths, dict(absent or {}))
    rows = [evaluate_claim(claim, evidence) for claim in claims]
    return pd.DataFrame(rows, columns=COLUMNS)


def summary(table: pd.DataFrame) -> str:
    """Every verdict class with its count, zeros included, so that no class goes unseen."""
    counts = table.verdict.map(verdict_class).value_counts()
    parts = [f"{int(counts.get(c, 0))} {c}" for c in VERDICT_CLASSES]
    return f"Summary of {len(table)} claims: " + ", ".join(parts)


def to_markdown(table: pd.DataFrame) -> str:
    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [
        '# Claims of "Are You Really Muted?" (PoPETs 2022) against this pipeline',
        "",
        "`paper_value` is the published value; `computed_value` is what this pipeline computed "
        "from the evidence named in `source`. Tolerances are stated in the verdict. A claim "
        "checked only on `testbed-profile` evidence (the project's model of an app's published "
        "behaviour) is an instrument check, never reproduced; a claim this run could not "
        "measure says why.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(cell(row[c]) for c in COLUMNS) + " |")
    lines += ["", summary(table), ""]
    return "\n".join(lines)


def write_claims(
    claims_path: str | Path,
    value_paths: Iterable[str | Path],
    csv_out: str | Path,
    md_out: str | Path,
    absent: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    table = build_table(claims_path, value_paths, absent)
    write_csv(csv_out, table)
    write_text(md_out, to_markdown(table))
    log.info("claims: %d rows; %s", len(table), summary(table))
    return table
