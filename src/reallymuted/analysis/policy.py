"""Policy against behaviour (issue 16): per app, what its policy says about the microphone and
audio-derived data while muted, beside what each source of evidence measured.

Two topics, each a question the measurements answer:

- ``microphone read while muted``: did the app (or its model, or its vendor's library) read the
  microphone while muted? From ``apps_headline.csv`` (the app-side witness's read share).
- ``audio-derived data leaving while muted``: did data derived from the muted microphone leave
  the client (telemetry gains, an RFC 6464 level, a payload that is not silence)? From
  ``apps_headline.csv``, and for Webex from the authors' released ``wmequality`` record
  (``telemetry_reference.csv``: real Webex telemetry, recorded while muted per the paper, T1).

The policy side is the corpus (workflow/resources/policies.yaml): a statement speaks to a topic
when its ``reading`` does (``mic-while-muted``; ``audio-collection`` or ``meeting-content``), and
the reading names whose it is. One row per statement (or the policy's silence) and measurement,
with a verdict: ``contradicted`` (the statement denies what was measured), ``consistent``,
``policy silent`` (the corpus holds nothing on the topic for the app), or ``not measured`` (the
source did not run here; the row says why). ``source`` is each measurement's own; ``verdict_on``
says what that evidence is of: a ``testbed-profile`` row measures the project's model of the
app, never the app.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from reallymuted.analysis.evidence import source_label
from reallymuted.claims import MODEL_SOURCES
from reallymuted.io import DataError, write_csv, write_json
from reallymuted.policy.corpus import Corpus, Statement, statement_from
from reallymuted.policy.review import review_text

log = logging.getLogger(__name__)

READS, AUDIO = "microphone read while muted", "audio-derived data leaving while muted"
TOPICS = {READS: ("mic-while-muted",), AUDIO: ("audio-collection", "meeting-content")}
COLUMNS = [
    "app",
    "topic",
    "policy_says",
    "statement",
    "statement_from",
    "reading_by",
    "measured",
    "measured_as",
    "mute_mode",
    "measurement",
    "verdict",
    "verdict_on",
    "status",
    "source",
]
MEASURED = "measured"
# What a row's evidence is of, by its source (a model is never presented as the app).
EVIDENCE_OF = {
    "testbed-profile": "a model of the app's published behaviour (testbed-profile), not the app",
    "sdk": "the vendor's own library, not the whole app",
    "sdk-preview": "the vendor's own library's pre-join path, not the whole app",
    "reference": "the app, as the authors measured it (their released record)",
}


def _yes(value: Any) -> str:
    return "yes" if value else "no"


def headline_measurements(headline: pd.DataFrame) -> pd.DataFrame:
    """One measurement per apps_headline row and topic: ``measured`` yes/no (empty when the
    source did not run), and the evidence in words."""
    rows = []
    for row in headline.itertuples():
        ran = row.status == MEASURED
        base = {
            "app": row.app,
            "source": row.source,
            "measured_as": row.measured_as,
            "mute_mode": row.mute_mode if ran else "",
            "status": row.status,
        }
        if not ran:
            rows += [{**base, "topic": t, "measured": "", "measurement": ""} for t in TOPICS]
            continue
        share = float(row.muted_read_share_app)
        reads = f"the app-side witness saw reads {share:.0%} of the muted time ({row.policy})"
        modelled = str(row.reads_modelled)
        if modelled.startswith("no"):  # e.g. a profile of a flags-only app reads every sample
            reads += f"; the model's reads are not the app's ({modelled.removeprefix('no: ')})"
        rows.append({**base, "topic": READS, "measured": _yes(share > 0), "measurement": reads})
        leaving = str(row.audio_derived_data_leaving) == "yes"
        rows.append(
            {**base, "topic": AUDIO, "measured": _yes(leaving), "measurement": str(row.evidence)}
        )
    return pd.DataFrame(rows)


def reference_measurements(telemetry: pd.DataFrame) -> pd.DataFrame:
    """Webex's telemetry in the authors' released record: real Webex, recorded while muted
    (the paper, T1). Gains in a decoded interval are audio-derived data that left the client."""
    gains = telemetry[["audio_max_gain", "audio_mean_gain", "audio_min_gain"]].dropna(how="all")
    intervals = len(gains)
    if intervals:
        lo, hi = int(gains.min().min()), int(gains.max().max())
        what = (f"{intervals} wmequality interval(s) in the released record carry the "
                f"microphone's gains ({lo}-{hi}) sent while muted (the paper's T1)")  # fmt: skip
    else:
        what = "the released record decodes to no interval with gains"
    row = {
        "app": "webex",
        "source": source_label(telemetry.source),
        "measured_as": "the authors' released Webex telemetry record (UserStudy/webex-dump.json)",
        "mute_mode": "app",
        "status": MEASURED,
        "topic": AUDIO,
        "measured": _yes(intervals),
        "measurement": what,
    }
    return pd.DataFrame([row])


def _verdict(says: str, measured: str, status: str) -> str:
    if status != MEASURED:
        return "not measured"
    if says == "silent":
        return "policy silent"
    return "contradicted" if says == "denies" and measured == "yes" else "consistent"


def _silence(app: str, topic: str, corpus: Corpus) -> str:
    """What the corpus holds for an app on a topic it says nothing about."""
    items = corpus.statements[app]
    if not items:
        return f"policy silent: {corpus.notes[app]}"
    related = [s for s in items if {"mute", "microphone"} & set(s.topics) and not s.reading_about]
    text = f"policy silent: none of the corpus's {len(items)} statement(s) for {app} speaks to it"
    if topic == READS and related:
        quoted = "; ".join(f'"{s.text}" ({s.attribution})' for s in related)
        text += f"; about mute it holds only: {quoted}"
    return text


def policy_sides(app: str, topic: str, corpus: Corpus) -> list[dict[str, str]]:
    """The statements of an app speaking to a topic, or one row for its silence."""
    speaking: list[Statement] = [
        s for s in corpus.statements[app] if s.reading_about in TOPICS[topic]
    ]
    if not speaking:
        silent = _silence(app, topic, corpus)
        return [{"policy_says": "silent", "statement": silent, "statement_from": "",
                 "reading_by": ""}]  # fmt: skip
    return [
        {
            "policy_says": str(s.reading_says),
            "statement": s.text,
            "statement_from": statement_from(s, corpus),
            "reading_by": str(s.reading_by),
        }
        for s in speaking
    ]


def policy_behaviour_table(corpus: Corpus, measurements: pd.DataFrame) -> pd.DataFrame:
    """Every statement (or silence) of every app beside every measurement on its topic."""
    rows = []
    for app in corpus.apps:
        for topic in TOPICS:
            measured = measurements[(measurements.app == app) & (measurements.topic == topic)]
            if measured.empty:
                raise DataError(f"{app}: no row, measured or not, for {topic!r}")
            for side in policy_sides(app, topic, corpus):
                for m in measured.itertuples():
                    verdict = _verdict(side["policy_says"], m.measured, m.status)
                    rows.append(
                        {
                            "app": app,
                            "topic": topic,
                            **side,
                            "measured": m.measured,
                            "measured_as": m.measured_as,
                            "mute_mode": m.mute_mode,
                            "measurement": m.measurement,
                            "verdict": verdict,
                            # what the evidence is of; nothing when there is none
                            "verdict_on": EVIDENCE_OF.get(m.source, "the app")
                            if m.status == MEASURED
                            else "",
                            "status": m.status,
                            "source": m.source,
                        }
                    )
    return pd.DataFrame(rows, columns=COLUMNS)


DATA_SHEET = "does not: Monitor or interfere with your meeting traffic or content"


def _strongest(rows: pd.DataFrame) -> pd.DataFrame:
    """The measured rows that are the app itself if there are any, else those of its model."""
    measured = rows[rows.status == MEASURED]
    real = measured[~measured.source.isin(MODEL_SOURCES)]
    return real if not real.empty else measured


def _verdict_of(rows: pd.DataFrame) -> str:
    verdicts = set(rows.verdict)
    for verdict in ("contradicted", "consistent", "policy silent"):
        if verdict in verdicts:
            return verdict
    return "not measured"


def policy_values(table: pd.DataFrame) -> dict[str, Any]:
    """For the claims (P2) and the report: the verdicts, with the source each rests on."""
    values: dict[str, Any] = {"source": source_label(table.source)}
    source_of: dict[str, str] = {}
    measured = table[table.status == MEASURED]
    audio = measured[measured.topic == AUDIO]
    values["measured_apps"] = sorted(set(audio.app))
    for verdict in ("contradicted", "consistent", "policy silent"):
        key = "apps_" + verdict.replace(" ", "_")
        values[key] = sorted(set(measured[measured.verdict == verdict].app))
    sheet = audio[audio.statement == DATA_SHEET]
    strongest = _strongest(sheet)
    if not strongest.empty:
        values["p2_data_sheet_verdict"] = _verdict_of(strongest)
        source_of["p2_data_sheet_verdict"] = source_label(strongest.source)
        values["p2_data_sheet_measurement"] = " | ".join(
            f"{r.measurement} ({r.source})" for r in strongest.itertuples()
        )
        source_of["p2_data_sheet_measurement"] = source_label(strongest.source)
    model = sheet[sheet.source.isin(MODEL_SOURCES)]
    if not model.empty:
        values["p2_data_sheet_verdict_on_model"] = _verdict_of(model)
        source_of["p2_data_sheet_verdict_on_model"] = source_label(model.source)
    values["source_of"] = source_of
    return values


# A sentence mentioning audio that says it is not collected (the paper's reading of Whereby's
# and Google's policies, P1); rule-based like the review, and its sentences are in the values.
NO_AUDIO = re.compile(
    r"\b(do|does|will)( not|n['’]t) (collect|record|store|access|monitor)"
    r"|\bnever (collect|record|store)"
)
FETCHED = "policy-text"  # the source of what the vendors' own documents say (policy.fetch)
P2_STATEMENT = ("webex", "cisco-privacy-statement")


def review_values(corpus: Corpus, fetched: Mapping[tuple[str, str], Path]) -> dict[str, Any]:
    """What the documents' current texts say (policy.fetch on): the apps whose every document
    was fetched as text, and, once the ten are, P1's three sets; P2's first part once Cisco's
    privacy statement is. ``fetched`` maps (app, document id) to its ``.txt``."""
    texts: dict[str, list[str]] = {}
    for app in corpus.apps:
        docs = [fetched.get((app, d.id)) for d in corpus.documents[app]]
        got = [Path(p).read_text(encoding="utf-8") for p in docs if p is not None]
        if len(got) == len(docs) and all(t.strip() for t in got):
            texts[app] = got
    values: dict[str, Any] = {"reviewed_apps": sorted(texts), "source_of": {}}
    reviews = {app: review_text("\n".join(t), app) for app, t in texts.items()}
    if len(reviews) == len(corpus.apps):
        sets = {
            "p1_mute_apps": [a for a, r in reviews.items() if r.mentions["mute"]],
            "p1_no_audio_apps": [
                a
                for a, r in reviews.items()
                if any(NO_AUDIO.search(s.text.lower()) for s in r.mentions["audio"])
            ],
            "p1_silent_on_audio_apps": [a for a, r in reviews.items() if not r.mentions["audio"]],
        }
        for key, apps in sets.items():
            values[key] = sorted(apps)
            values["source_of"][key] = FETCHED
    app, doc = P2_STATEMENT
    path = fetched.get((app, doc))
    if path is not None and Path(path).read_text(encoding="utf-8").strip():
        said = review_text(Path(path).read_text(encoding="utf-8")).mentions["audio"]
        values["p2_privacy_statement_audio"] = "mentions audio" if said else "never says audio"
        values["p2_privacy_statement_audio_sentences"] = [s.text for s in said]
        values["source_of"]["p2_privacy_statement_audio"] = FETCHED
    return values


def load_measurements(
    headline_csv: str | Path | None, telemetry_csv: str | Path | None, apps: list[str]
) -> pd.DataFrame:
    """The measurements this run has; an app with none gets a row saying so per topic."""
    parts = []
    if headline_csv:
        parts.append(headline_measurements(pd.read_csv(headline_csv)))
    if telemetry_csv:
        parts.append(reference_measurements(pd.read_csv(telemetry_csv)))
    columns = ["app", "source", "measured_as", "mute_mode", "status", "topic", "measured",
               "measurement"]  # fmt: skip
    found = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    missing = [
        {
            "app": app,
            "source": "none",
            "measured_as": "",
            "mute_mode": "",
            "topic": topic,
            "status": "not measured: no source of this run measured it for this app",
            "measured": "",
            "measurement": "",
        }
        for app in apps
        for topic in TOPICS
        if found[(found.app == app) & (found.topic == topic)].empty
    ]
    return pd.concat([found, pd.DataFrame(missing, columns=columns)], ignore_index=True)


def write_policy_behaviour(
    corpus: Corpus,
    headline_csv: str | Path | None,
    telemetry_csv: str | Path | None,
    outputs: Mapping[str, str | Path],
    fetched: Mapping[tuple[str, str], Path] | None = None,
) -> pd.DataFrame:
    """policy_behaviour.csv and policy.json; returns the table (to draw). ``fetched``: the
    documents' current texts, when policy.fetch is on."""
    measurements = load_measurements(headline_csv, telemetry_csv, corpus.apps)
    table = policy_behaviour_table(corpus, measurements)
    values = policy_values(table)
    reviewed = review_values(corpus, fetched or {})
    values["source_of"].update(reviewed.pop("source_of"))
    write_csv(outputs["table"], table)
    write_json(outputs["values"], {**values, **reviewed})
    log.info("policy against behaviour: %d rows; %s", len(table),
             table.verdict.value_counts().to_dict())  # fmt: skip
    return table
