"""The policy stage (issue 16): the corpus, ``reallymuted policy review`` and the policy against
behaviour table, on the real corpus, the seed review's own text and small real tables."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from reallymuted.cli import main
from reallymuted.config import ConfigError, load_registry
from reallymuted.policy.corpus import POLICIES, load_corpus, verbatim_problems
from reallymuted.policy.review import review_file, review_text

REPO = Path(__file__).resolve().parents[1]
SEED = (REPO / "../shared/seeds/003_42067d6f05598a0b.txt").resolve()
# The seed review's headings over its quotations of Cisco's main policy -> the rubric category
# (corpus keys) each stands for; "Legal Requests" and "Other" are none of the ten.
SEED_HEADINGS = {
    "first party collection": "first_party_collection",
    "data enhancement": "data_enhancement",
    "third party data collection": "data_enhancement",
    "product improvement": "product_improvement",
    "third party access": "third_party_access",
    "onward transfer": "transaction_asset",
    "data retention": "retention",
    "personal data leak": "personal_data_leak",
}


@pytest.fixture(scope="module")
def seed_text() -> str:
    if not SEED.is_file():
        pytest.fail(f"seed review not found at {SEED} (clone with ../shared beside it)")
    return SEED.read_text(encoding="utf-8").replace("\u0336", "")  # struck-through text


def main_policy_quotations(seed: str) -> list[tuple[str, str]]:
    """(heading, quoted text) of each note of the seed's "Main Policy" section that quotes the
    policy: the note's first line is its heading, the quotation starts at the paragraph that
    opens with “ (or is quoted inside the commentary) and runs to the note's end."""
    section = seed.split("\nMain Policy\n", 1)[1].split("\nSecondary Policy\n", 1)[0]
    notes = re.split(r"\n[—–\s\u200a]{5,}\n", section)
    found = []
    for note in notes:
        lines = [line.strip() for line in note.strip().splitlines() if line.strip()]
        if not lines or lines[0].lower() not in SEED_HEADINGS:
            continue
        opening = [i for i, line in enumerate(lines) if line.startswith("“")]
        if opening:
            found.append((lines[0], "\n".join(lines[opening[0] :])))
        else:  # quoted inside the commentary: “(i)f we otherwise notify you ...”
            found += [(lines[0], q) for q in re.findall(r"“([^”]+)”", "\n".join(lines[1:]))]
    return found


# --- the corpus ------------------------------------------------------------------------------


def test_corpus_covers_the_registrys_ten_apps_and_says_when_it_holds_nothing():
    corpus = load_corpus(apps=load_registry())
    assert len(corpus.apps) == 10
    for app in corpus.apps:
        assert corpus.documents[app], app  # every app's governing document is listed
        if not corpus.statements[app]:
            assert "quotes nothing" in corpus.notes[app], app
    assert len(corpus.statements["webex"]) > 10  # the seed's quotations of Cisco
    assert {s.app for items in corpus.statements.values() for s in items} == {
        "meet",
        "webex",
        "whereby",
    }


def test_every_statement_is_verbatim_in_the_shared_file_it_names():
    corpus = load_corpus()
    assert verbatim_problems(corpus) == []
    for items in corpus.statements.values():
        for item in items:
            # the paper's summary is never passed off as the vendor's words
            if item.attribution == "paper":
                assert item.origin == "paper"
            assert item.version, item.text  # the version quoted is always said


def test_a_statement_changed_by_one_word_is_no_longer_verbatim(tmp_path):
    raw = yaml.safe_load(POLICIES.read_text())
    first = raw["apps"]["webex"]["statements"][2]
    first["text"] = first["text"].replace("identify", "recognise")
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    problems = verbatim_problems(load_corpus(path))
    assert len(problems) == 1 and "not verbatim in seed" in problems[0]


def test_corpus_errors_name_the_statement_and_what_is_wrong(tmp_path):
    raw = yaml.safe_load(POLICIES.read_text())
    raw["apps"]["webex"]["statements"][0]["document"] = "no-such-doc"
    raw["apps"]["webex"]["statements"][1]["category"] = "gossip"
    raw["apps"]["zoom"].pop("note")
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(ConfigError) as error:
        load_corpus(path)
    assert "apps.zoom" in str(error.value) and "note" in str(error.value)
    raw["apps"]["zoom"]["note"] = "nothing"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(ConfigError) as error:
        load_corpus(path, apps=[*load_registry(), "skype"])
    message = str(error.value)
    assert "apps.webex.statements[0]: document 'no-such-doc'" in message
    assert "apps.webex.statements[1]: category 'gossip'" in message
    assert "apps missing: skype" in message


# --- reallymuted policy review ---------------------------------------------------------------


def test_review_recovers_the_seeds_categories_for_each_quotation_of_ciscos_main_policy(
    seed_text,
):
    quotations = main_policy_quotations(seed_text)
    assert len(quotations) >= 11  # every quoting note under a rubric heading
    missed = []
    for heading, quote in quotations:
        review = review_text(quote)
        if not review.categories[SEED_HEADINGS[heading.lower()]]:
            missed.append(f"{heading}: {quote[:70]}")
    assert missed == []


def test_review_of_ciscos_quoted_main_policy_finds_no_audio_meeting_or_recording(seed_text):
    # the seed's summary note 2: the main policy never says audio, meeting or recording
    text = "\n".join(quote for _, quote in main_policy_quotations(seed_text))
    review = review_text(text)
    assert {"audio", "microphone", "mute", "meeting", "recording"} <= set(review.never_said)
    assert review.mentions["audio"] == []
    periods = [p for p, _ in review.retention]
    assert "as needed to fulfill" in periods and "within 30 days" in periods


def test_review_of_the_data_sheet_finds_its_periods_and_its_diagnostics(seed_text):
    corpus = load_corpus()
    sheet = [s.text for s in corpus.statements["webex"] if s.document.startswith("webex-")]
    review = review_text("\n".join(sheet))
    periods = [p.lower() for p, _ in review.retention]
    assert "7 years" in periods and "within 60 days" in periods
    assert review.mentions["diagnostics"] and review.mentions["telemetry"]  # instrumentation
    assert review.mentions["audio"]  # "all media streams (audio, VOIP, video, ...)"
    assert "meeting" not in review.never_said


def test_policy_review_command_says_when_a_text_never_mentions_audio(tmp_path, capsys):
    text = tmp_path / "policy.txt"
    text.write_text(
        "We collect your name and email address. We retain it for as long as your account is "
        "active. We may share personal information with our vendors.\n"
    )
    out_json = tmp_path / "review.json"
    assert main(["policy", "review", str(text), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "the text never mentions audio" in out
    assert "the text never mentions microphone" in out
    assert "Third Party Access [third_party_access]" in out
    (review,) = json.loads(out_json.read_text())
    assert review["mentions"]["audio"] == []
    assert review["retention_periods"][0]["period"] == "for as long as your account is active"
    assert "machine_learning_review" in review["unaddressed"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"  \n\t\n", "empty"),
        (b"%PDF-1.4\x00\x01\x02binary", "binary data"),
        ("Datenschutzerkl\u00e4rung: wir erheben".encode("latin-1"), "not UTF-8"),
        (b"1234 5678 .,;", "no words"),
    ],
)
def test_policy_review_rejects_input_it_cannot_read(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    good = tmp_path / "good.txt"
    good.write_text("We retain your data for 7 years.\n")
    assert main(["policy", "review", str(bad), str(good)]) == 2
    captured = capsys.readouterr()
    assert f"{bad}: " in captured.err and message in captured.err
    assert "'for 7 years'" in captured.out  # the readable file is still reviewed


def test_policy_review_names_a_missing_file_or_a_directory(tmp_path, capsys):
    assert main(["policy", "review", str(tmp_path / "absent.txt"), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "absent.txt: no such file" in err and "is a directory" in err
    with pytest.raises(SystemExit) as usage:
        main(["policy", "review"])
    assert usage.value.code == 2


def test_review_file_reads_utf8_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffWe do not collect audio data.".encode())
    review = review_file(path)
    assert review.mentions["audio"] and review.categories["first_party_collection"]
