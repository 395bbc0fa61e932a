"""A policy text against the seed review's rubric, sentence by sentence (``reallymuted policy
review``).

Rule-based on purpose: each of the ten categories is a handful of phrases a policy uses when it
speaks to that category (collect, share with, retain, merger, ...), so every category found
comes with the sentences that matched it, and a reader can check each one. No model decides;
a category is "never addressed" when no sentence matches it. Besides the rubric the review lists
the retention periods a text states ("30 days", "7 years", "as long as ...") and every sentence
that mentions the microphone, audio, mute, telemetry or diagnostics; words the text never uses
(the seed's point that Cisco's main policy never says "audio", "meeting" or "recording") are
listed too. The phrases were written from the seed review's quotations of Cisco's policies and
are tested on them (tests/test_policy.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# Category key (the corpus's rubric keys) -> phrases that address it, as regular expressions
# matched against a lowercased sentence. A phrase is kept narrow so that a match is evidence.
RULES: dict[str, tuple[str, ...]] = {
    "personal_data_leak": (
        r"made (broadly |publicly )?available to others",
        r"public profile",
        r"discussion forums?|chat rooms?|community forum",
        r"\brecord(ing)? (meetings|calls)\b",
        r"shared with others",
        r"visible to (all |other )?(participants|attendees|users)",
    ),
    "first_party_collection": (
        r"\b(we|cisco)( may| also)* collect",
        r"information (that )?we collect",
        r"\bpersonal (information|data)[”\"]? (is|means|includes)\b",
        r"(time|point) of (data )?collection",
        r"data controllers?",
        r"rights? of access|request (access|corrections?)",
        r"supplemental privacy (statements?|notices?)",
        r"\bdo(es)? not collect\b",
    ),
    "data_enhancement": (
        r"third[- ]party sources",
        r"from (trusted )?third parties",
        r"engage third parties to collect",
        r"combine (the |your )?(information|data)",
        r"obtained from other sources",
        r"cookies or similar technologies",
        r"partner with third parties",
    ),
    "third_party_access": (
        r"\bshare (your |such )?(personal )?(information|data)\b",
        r"\bsharing with third parties",
        r"business partners or vendors",
        r"(third parties|vendors) for (their )?(own )?marketing",
        r"\bdisclos(e|ure) (your |personal )?(information|data)",
        r"law enforcement|competent authorit",
        r"\bsell (your )?(personal )?(information|data)",
        r"consent to the sharing",
    ),
    "employer_school_sponsorship": (
        r"\bemployers?\b",
        r"\bschools?\b",
        r"(site |system |your )?administrators?\b",
        r"control hub",
        r"customer['’]s (site )?admin",
        r"your organi[sz]ation",
    ),
    "retention": (
        r"\bretain(s|ed|ing)?\b",
        r"\bretention\b",
        r"\bdelet(e|ed|es|ing|ion)\b",
        r"\bkept (for|as|until)\b",
        r"\bas long as\b",
        r"\bremov(e|al) (of )?(your )?(personal )?(information|data)",
    ),
    "hosts_participants": (
        r"\bhosts?\b",
        r"\bparticipants?\b",
        r"\battendees?\b",
        r"\borgani[sz]er",
    ),
    "product_improvement": (
        r"\bimprov(e|es|ed|ing|ement)\b",
        r"\bcustomi[sz](e|ing|ation)\b",
        r"\bdevelop(ing)? (new )?(products|services|features)",
        r"\banalytics\b",
        r"\bresearch\b",
        r"\bperformance\b",
    ),
    "transaction_asset": (
        r"\bmergers?\b",
        r"\bacquisitions?\b",
        r"sale of (company |our )?(assets|business)",
        r"\bbankruptcy\b",
        r"restructuring|reorgani[sz]ation|consolidation",
    ),
    "machine_learning_review": (
        r"machine learning",
        r"artificial intelligence|\bai\b",
        r"human review|reviewed by (humans|people|our staff)",
        r"facial (recognition|vectors?)",
        r"train(ing)? (our |the )?(models|algorithms)",
        r"automated (analysis|processing|decision)",
    ),
}

# What the review lists wherever it is mentioned (the microphone side of a policy).
MENTIONS: dict[str, str] = {
    "microphone": r"\bmicrophones?\b|\bmics?\b",
    "audio": r"\baudio\b|\bvoice\b",
    "mute": r"\b(un)?mut(e|ed|es|ing)\b",
    "telemetry": r"\btelemetr(y|ics)\b|\binstrumentation\b",
    "diagnostics": r"\bdiagnostics?\b|\btroubleshooting\b",
}
# Words a video-conferencing policy would be expected to use (the seed's summary note 2).
VOCABULARY: dict[str, str] = {
    **MENTIONS,
    "meeting": r"\bmeetings?\b",
    "recording": r"\brecord(ing|ings|ed)?\b",
    "conference": r"\b(video)?conferenc(e|es|ing)\b",
    "video": r"\bvideos?\b",
}

_NUMBER = (
    r"\d+|one|two|three|four|five|six|seven|eight|nine|ten|twelve|fifteen|eighteen|"
    r"twenty|thirty|forty-five|sixty|ninety|hundred"
)
RETENTION_PERIODS = (
    rf"\b(?:up to |within |for |after |at least |no (?:more|longer) than )?(?:{_NUMBER})"
    r"(?:\s*\(\d+\))?[\s-]+(?:calendar |business )?(?:days?|weeks?|months?|years?)\b",
    r"\b(?:for )?as long as (?:[a-z]+ ){0,6}(?:necessary|needed|required|active|exists|"
    r"permitted|reasonably)\b",
    r"\bas (?:needed|necessary) to (?:fulfil+|comply|provide)\b",
    r"\bindefinitely\b",
    r"\buntil (?:you|the customer|customer|the user) (?:delete|close|terminat|request)\w*",
)

_SENTENCE_END = re.compile(r"(?<=[.!?;])[”\"’']?\s+(?=[“\"(A-Z0-9])")


class ReviewError(ValueError):
    """The input is not a policy text this review can read (empty, binary, not UTF-8)."""


@dataclass(frozen=True)
class Sentence:
    number: int  # 1-based, in the order of the text
    text: str


@dataclass
class Review:
    name: str
    sentences: list[Sentence]
    categories: dict[str, list[Sentence]] = field(default_factory=dict)  # key -> evidence
    mentions: dict[str, list[Sentence]] = field(default_factory=dict)  # word group -> sentences
    retention: list[tuple[str, Sentence]] = field(default_factory=list)  # (period, sentence)
    never_said: list[str] = field(default_factory=list)  # vocabulary the text never uses

    @property
    def unaddressed(self) -> list[str]:
        return [key for key in RULES if not self.categories.get(key)]

    def to_dict(self) -> dict[str, object]:
        def listed(items: list[Sentence]) -> list[dict[str, object]]:
            return [{"sentence": s.number, "text": s.text} for s in items]

        return {
            "file": self.name,
            "sentences": len(self.sentences),
            "categories": {k: listed(v) for k, v in self.categories.items() if v},
            "unaddressed": self.unaddressed,
            "retention_periods": [
                {"period": p, "sentence": s.number, "text": s.text} for p, s in self.retention
            ],
            "mentions": {k: listed(v) for k, v in self.mentions.items()},
            "never_said": self.never_said,
        }


def read_text(path: str | Path) -> str:
    """A policy file's text; a :class:`ReviewError` saying plainly why it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise ReviewError(f"{path}: no such file")
    if path.is_dir():
        raise ReviewError(f"{path}: is a directory, not a policy text")
    data = path.read_bytes()
    if not data.strip():
        raise ReviewError(f"{path}: empty (no text to review)")
    if b"\x00" in data[:8192]:
        raise ReviewError(f"{path}: binary data, not a text (a PDF or HTML page must be converted "
                          "to text first, e.g. by the policy fetch rule)")  # fmt: skip
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReviewError(f"{path}: not UTF-8 text (invalid byte at offset {exc.start})") from None
    if not re.search(r"[A-Za-z]{2,}", text):
        raise ReviewError(f"{path}: no words in it (not a policy text)")
    return text


def sentences(text: str) -> list[Sentence]:
    """The text's sentences: split at line breaks (a list item or a table cell is a unit of its
    own) and, within a line, after a full stop, ! ? or ; followed by a capital or a quote."""
    found: list[str] = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if line:
            found.extend(part.strip() for part in _SENTENCE_END.split(line) if part.strip())
    return [Sentence(i, s) for i, s in enumerate(found, start=1)]


def _matches(patterns: tuple[str, ...] | str, text: str) -> bool:
    patterns = (patterns,) if isinstance(patterns, str) else patterns
    return any(re.search(p, text) for p in patterns)


def review_text(text: str, name: str = "<text>") -> Review:
    """Map a policy text to the rubric, sentence by sentence."""
    units = sentences(text)
    review = Review(name=name, sentences=units)
    for key, patterns in RULES.items():
        review.categories[key] = [s for s in units if _matches(patterns, s.text.lower())]
    for word, pattern in MENTIONS.items():
        review.mentions[word] = [s for s in units if _matches(pattern, s.text.lower())]
    for unit in units:
        for pattern in RETENTION_PERIODS:
            for match in re.finditer(pattern, unit.text.lower()):
                review.retention.append((unit.text[match.start() : match.end()], unit))
    # a sentence that states a retention period addresses retention, whatever its verb
    stated = {s.number for _, s in review.retention}
    review.categories["retention"] = [
        s for s in units if s.number in stated or s in review.categories["retention"]
    ]
    whole = " ".join(s.text.lower() for s in units)
    review.never_said = [w for w, p in VOCABULARY.items() if not re.search(p, whole)]
    return review


def review_file(path: str | Path) -> Review:
    return review_text(read_text(path), str(path))


def format_review(review: Review, rubric: dict[str, str]) -> str:
    """The review as plain text: the categories with their evidence, those never addressed, the
    retention periods and the mentions."""
    lines = [f"== {review.name}: {len(review.sentences)} sentences"]
    lines.append("rubric categories addressed (the sentences that matched):")
    for key, found in review.categories.items():
        if found:
            lines.append(f"  {rubric.get(key, key)} [{key}]: {len(found)} sentence(s)")
            lines += [f"    [{s.number}] {s.text}" for s in found]
    never = review.unaddressed
    lines.append("never addressed: " + (", ".join(never) if never else "none (all ten addressed)"))
    lines.append("retention periods stated:" + ("" if review.retention else " none"))
    lines += [f"  {period!r} [{s.number}] {s.text}" for period, s in review.retention]
    for word, found in review.mentions.items():
        if found:
            lines.append(f"mentions {word}: {len(found)} sentence(s)")
            lines += [f"  [{s.number}] {s.text}" for s in found]
        else:
            lines.append(f"mentions {word}: never (the text never mentions {word})")
    said = review.never_said
    lines.append("words never used: " + (", ".join(said) if said else "none"))
    return "\n".join(lines)
