"""The policy corpus (workflow/resources/policies.yaml): per app, the documents that govern it
and short verbatim statements from them, each with its rubric category.

The schema (workflow/schemas/policies.schema.yaml) checks the shape; :func:`load_corpus` checks
what a schema cannot: every statement names a document of its app and a known origin, its
category is one of the rubric's, the apps are the registry's ten. :func:`verbatim_problems`
checks every statement against the shared file it was taken from, so that nothing in the
corpus is written by the project and passed off as a vendor's (or the paper's) words.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reallymuted.config import ConfigError, load_yaml, validate_config
from reallymuted.paths import REPO

# the corpus and its schema: code inputs of every job that reads them (reallymuted.codegraph)
RESOURCES = ("/workflow/resources/policies.yaml", "/workflow/schemas/policies.schema.yaml")
POLICIES = REPO / "workflow" / "resources" / "policies.yaml"
POLICIES_SCHEMA = REPO / "workflow" / "schemas" / "policies.schema.yaml"


@dataclass(frozen=True)
class Document:
    app: str
    id: str
    title: str
    url: str
    url_from: str
    version: str | None


@dataclass(frozen=True)
class Statement:
    app: str
    text: str
    document: str
    attribution: str  # "vendor": the vendor's words; "paper": the paper's summary of them
    origin: str
    where: str
    version: str | None
    category: str | None
    topics: tuple[str, ...]
    reading_about: str | None  # what it says about the app's behaviour while muted, if anything
    reading_says: str | None
    reading_by: str | None


@dataclass(frozen=True)
class Corpus:
    rubric: dict[str, str]  # category key -> the seed review's heading
    origins: dict[str, dict[str, str]]
    documents: dict[str, list[Document]]  # app -> its documents
    statements: dict[str, list[Statement]]  # app -> its statements (may be empty)
    notes: dict[str, str]

    @property
    def apps(self) -> list[str]:
        return list(self.documents)

    def document(self, app: str, doc_id: str) -> Document:
        return next(d for d in self.documents[app] if d.id == doc_id)


def _statement(app: str, raw: dict[str, Any], documents: dict[str, Document]) -> Statement:
    reading = raw.get("reading") or {}
    version = raw.get("version") or documents[raw["document"]].version
    return Statement(
        app=app,
        text=" ".join(str(raw["text"]).split()),
        document=raw["document"],
        attribution=raw["attribution"],
        origin=raw["origin"],
        where=raw.get("where", ""),
        version=version,
        category=raw["category"],
        topics=tuple(raw["topics"]),
        reading_about=reading.get("about"),
        reading_says=reading.get("says"),
        reading_by=reading.get("by"),
    )


def load_corpus(
    path: str | Path = POLICIES,
    schema: str | Path = POLICIES_SCHEMA,
    apps: Iterable[str] | None = None,
) -> Corpus:
    """The corpus, validated; ``apps`` (default: none checked) are the ids it must cover, no
    more, no fewer. Raises :class:`ConfigError` naming every problem."""
    try:
        raw = validate_config(load_yaml(path), schema)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    problems: list[str] = []
    documents: dict[str, list[Document]] = {}
    statements: dict[str, list[Statement]] = {}
    for app, entry in raw["apps"].items():
        docs = {d["id"]: Document(app=app, **d) for d in entry["documents"]}
        if len(docs) != len(entry["documents"]):
            problems.append(f"apps.{app}.documents: two documents with one id")
        documents[app] = list(docs.values())
        statements[app] = []
        for i, item in enumerate(entry["statements"]):
            where = f"apps.{app}.statements[{i}]"
            if item["document"] not in docs:
                problems.append(f"{where}: document {item['document']!r} is not one of {app}'s")
                continue
            if item["origin"] not in raw["origins"]:
                problems.append(f"{where}: origin {item['origin']!r} is not in origins")
            if item["category"] is not None and item["category"] not in raw["rubric"]:
                problems.append(f"{where}: category {item['category']!r} is not in the rubric")
            statements[app].append(_statement(app, item, docs))
        for doc in docs.values():
            if doc.url_from not in raw["origins"] and doc.url_from != "best knowledge":
                problems.append(f"apps.{app}: document {doc.id} url_from {doc.url_from!r} is "
                                "neither an origin nor 'best knowledge'")  # fmt: skip
    if apps is not None:
        wanted, have = set(apps), set(raw["apps"])
        if wanted - have:
            problems.append("apps missing: " + ", ".join(sorted(wanted - have)))
        if have - wanted:
            problems.append("apps not in the registry: " + ", ".join(sorted(have - wanted)))
    if problems:
        raise ConfigError(f"{path}: invalid policy corpus:\n  - " + "\n  - ".join(problems))
    notes = {app: " ".join(e.get("note", "").split()) for app, e in raw["apps"].items()}
    return Corpus(dict(raw["rubric"]), dict(raw["origins"]), documents, statements, notes)


def _flat(text: str) -> str:
    return " ".join(text.split())


def verbatim_problems(corpus: Corpus, repo: Path = REPO) -> list[str]:
    """Statements not found word for word (whitespace aside) in the origin they name; an
    origin file that is not there is a problem too."""
    texts: dict[str, str] = {}
    problems = []
    for name, origin in corpus.origins.items():
        path = (repo / origin["path"]).resolve()
        if path.is_file():
            # the seed strikes text through with U+0336; struck text is not the policy's
            texts[name] = _flat(path.read_text(encoding="utf-8").replace("\u0336", ""))
        else:
            problems.append(f"origin {name}: {path} not found")
    for app, items in corpus.statements.items():
        for item in items:
            if item.origin in texts and item.text not in texts[item.origin]:
                problems.append(f"{app}: not verbatim in {item.origin}: {item.text[:60]!r}")
    return problems


def statement_from(item: Statement, corpus: Corpus) -> str:
    """Where a statement comes from, in words: whose words, which document, which version, and
    where the project holds it."""
    doc = corpus.document(item.app, item.document)
    origin = "the seed review" if item.origin == "seed" else "the paper"
    where = f" ({item.where})" if item.where else ""
    if item.attribution == "paper":
        return f"the paper's summary of {doc.title}, {item.version}{where}; not the vendor's words"
    return f"{doc.title}, {item.version}, as quoted by {origin}{where}"
