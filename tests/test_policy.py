"""The policy stage (issue 16): the corpus, ``reallymuted policy review`` and the policy against
behaviour table, on the real corpus, the seed review's own text and small real tables."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from reallymuted.analysis import apps as apps_analysis
from reallymuted.analysis.policy import (
    AUDIO,
    DATA_SHEET,
    READS,
    review_values,
    write_policy_behaviour,
)
from reallymuted.analysis.telemetry.reference import decode_reference
from reallymuted.claims import PASSED_ON_MODEL, STAGE_OF, build_table
from reallymuted.cli import main
from reallymuted.config import ConfigError, load_registry
from reallymuted.figures import saved_source
from reallymuted.figures.policy import plot_policy_behaviour
from reallymuted.policy.corpus import POLICIES, load_corpus, verbatim_problems
from reallymuted.policy.fetch import fetch_document
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
    """(heading, quoted text) of each quotation of Cisco in the seed's "Main Policy" notes under
    a rubric heading. A note's first line is its heading; a quotation opens with a paragraph
    starting with “ and runs to the note's end, or, when another quotation follows, up to the
    paragraph of commentary that introduces it. A note without one quotes inside its
    commentary (“(i)f we otherwise notify you ...”)."""
    section = seed.split("\nMain Policy\n", 1)[1].split("\nSecondary Policy\n", 1)[0]
    notes = re.split(r"\n[—–\s\u200a]{5,}\n", section)
    found = []
    for note in notes:
        lines = [line.strip() for line in note.strip().splitlines() if line.strip()]
        if not lines or lines[0].lower() not in SEED_HEADINGS:
            continue
        opening = [i for i, line in enumerate(lines) if line.startswith("“")]
        ends = [i - 1 for i in opening[1:]] + [len(lines)] if opening else []
        found += [(lines[0], "\n".join(lines[i:end])) for i, end in zip(opening, ends, strict=True)]
        if not opening:
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
    assert len(quotations) == 13  # every quotation under a rubric heading
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


# --- policy against behaviour ----------------------------------------------------------------


def headline_rows() -> pd.DataFrame:
    """apps_headline.csv as the apps stage writes it, for three apps: the webex-2021 profile
    seen sending gains while muted, the soft-mute profile of Meet sending none, and sources
    that did not run (rows as apps.headline_table makes them)."""
    model = "model {} of the app's published behaviour, not the app"
    rows = [
        {"source": "testbed-profile", "app": "webex", "measured_as": model.format("webex-2021"),
         "status": "measured", "mute_mode": "app", "policy": "continuous",
         "muted_read_share_app": 1.0, "reads_modelled": "yes",
         "audio_derived_data_leaving": "yes",
         "evidence": "6 telemetry POST(s) with microphone gains decoded while muted"},
        {"source": "native", "app": "webex", "measured_as": "native-windows",
         "status": "not run: needs a Windows host with the app installed and an account"},
        {"source": "testbed-profile", "app": "meet",
         "measured_as": model.format("webrtc-soft-mute"), "status": "measured",
         "mute_mode": "app", "policy": "continuous", "muted_read_share_app": 1.0,
         "reads_modelled": "yes", "audio_derived_data_leaving": "no",
         "evidence": "RTP continues at 50 packets/s but its level header says silence"},
        {"source": "testbed-profile", "app": "zoom", "measured_as": model.format("zoom-native"),
         "status": "measured", "mute_mode": "app", "policy": "continuous",
         "muted_read_share_app": 1.0,
         "reads_modelled": "no: " + apps_analysis.UNMODELLED["M2"],
         "audio_derived_data_leaving": "no", "evidence": "no RTP while muted"},
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=apps_analysis.HEADLINE_COLUMNS)


@pytest.fixture(scope="module")
def reference_telemetry(tmp_path_factory, reference_dir) -> Path:
    """The authors' released Webex record, decoded by the reference stage's own code."""
    out = tmp_path_factory.mktemp("telemetry")
    names = {"table": out / "t.csv", "problems": out / "p.csv", "values": out / "v.json"}
    decode_reference(reference_dir / "UserStudy/webex-dump.json", names, "webex-dump.json")
    return names["table"]


def run_stage(tmp_path: Path, headline: pd.DataFrame | None, telemetry: Path | None):
    headline_csv = None
    if headline is not None:
        headline_csv = tmp_path / "apps_headline.csv"
        headline.to_csv(headline_csv, index=False)
    outs = {"table": tmp_path / "policy_behaviour.csv", "values": tmp_path / "policy.json"}
    table = write_policy_behaviour(load_corpus(), headline_csv, telemetry, outs)
    assert pd.read_csv(outs["table"]).shape == table.shape
    return table, json.loads(outs["values"].read_text())


def test_webex_data_sheet_beside_the_telemetry_measured_while_muted(tmp_path, reference_telemetry):
    table, values = run_stage(tmp_path, headline_rows(), reference_telemetry)
    sheet = table[(table.app == "webex") & (table.statement == DATA_SHEET)]
    by_source = {r.source: r for r in sheet.itertuples()}
    assert set(by_source) == {"reference", "testbed-profile", "native"}
    real = by_source["reference"]
    assert real.verdict == "contradicted" and real.measured == "yes"
    assert "microphone's gains (14-51)" in real.measurement
    assert "Webex Meetings Privacy Data Sheet" in real.statement_from
    assert "quoted by the paper" in real.statement_from
    model = by_source["testbed-profile"]
    assert model.verdict == "contradicted" and "not the app" in model.verdict_on
    assert by_source["native"].verdict == "not measured" and by_source["native"].measured == ""
    # the claims: P2's second part rests on the authors' record, the model only in the note
    assert values["p2_data_sheet_verdict"] == "contradicted"
    assert values["source_of"]["p2_data_sheet_verdict"] == "reference"
    assert values["p2_data_sheet_verdict_on_model"] == "contradicted"
    assert values["reviewed_apps"] == [] and "p1_mute_apps" not in values


def test_policy_silence_and_what_the_paper_said_are_told_apart(tmp_path):
    table, _ = run_stage(tmp_path, headline_rows(), None)
    zoom = table[table.app == "zoom"]
    assert set(zoom.policy_says) == {"silent"}
    assert zoom.statement.str.contains("the others do not mention audio").all()
    reads = zoom[zoom.topic == READS].iloc[0]
    assert reads.verdict == "policy silent" and "not the app's" in reads.measurement  # M2
    meet = table[(table.app == "meet") & (table.topic == AUDIO)].iloc[0]
    assert meet.verdict == "consistent" and meet.policy_says == "denies"
    assert "not the vendor's words" in meet.statement_from  # the paper's summary
    meet_reads = table[(table.app == "meet") & (table.topic == READS)].iloc[0]
    assert "organiser's ability to mute others" in meet_reads.statement
    # apps the headline does not hold are there too, saying nothing was measured
    teams = table[table.app == "teams"]
    assert len(teams) == 2 and set(teams.verdict) == {"not measured"}


def test_every_row_carries_the_source_of_its_measurement(tmp_path, reference_telemetry):
    table, values = run_stage(tmp_path, headline_rows(), reference_telemetry)
    assert set(table.source) == {"testbed-profile", "native", "reference", "none"}
    models = table[table.source == "testbed-profile"]
    assert models.verdict_on.str.contains("not the app").all()
    assert not table[table.source != "testbed-profile"].verdict_on.str.contains("model").any()
    assert values["source"] == "native, none, reference, testbed-profile"


def test_a_claim_checked_only_on_the_model_is_never_reproduced(tmp_path):
    _, values = run_stage(tmp_path, headline_rows(), None)  # no reference: the model alone
    assert values["source_of"]["p2_data_sheet_verdict"] == "testbed-profile"
    path = tmp_path / "policy.json"
    claims = build_table(
        REPO / "workflow/resources/paper_claims.yaml", [path], dict.fromkeys(STAGE_OF, "off")
    )
    p2 = claims.set_index("id").loc["P2"]
    assert p2.verdict.startswith(PASSED_ON_MODEL) and "reproduced" not in p2.verdict
    p1 = claims.set_index("id").loc["P1"]
    assert p1.verdict.startswith("not measured here") and "policy.fetch is off" in p1.verdict


def test_without_any_measurement_every_row_says_so(tmp_path):
    table, values = run_stage(tmp_path, None, None)
    assert len(table) == 9 * 2 + 3  # a row per app and topic, Webex's two statements on audio
    assert set(table.verdict) == {"not measured"}
    assert values["measured_apps"] == [] and "p2_data_sheet_verdict" not in values
    claims = build_table(REPO / "workflow/resources/paper_claims.yaml",
                         [tmp_path / "policy.json"], dict.fromkeys(STAGE_OF, "off"))  # fmt: skip
    assert "no source of this run measured Webex" in claims.set_index("id").loc["P2"].verdict


def test_the_figure_footer_names_the_sources_of_the_cells_drawn(tmp_path, reference_telemetry):
    table, _ = run_stage(tmp_path, headline_rows(), reference_telemetry)
    png = tmp_path / "policy_behaviour.png"
    plot_policy_behaviour(table, [png, tmp_path / "policy_behaviour.pdf"])
    assert saved_source(png) == "source: reference, testbed-profile"  # native did not run


def test_fetched_texts_answer_p1_and_p2_by_the_review(tmp_path):
    corpus = load_corpus()
    fetched = {}
    for app in corpus.apps:
        for doc in corpus.documents[app]:
            text = "We collect your name. We retain it for 30 days.\n"
            if app == "meet":
                text += "The organizer can mute participants. We do not collect audio data.\n"
            if app == "whereby":
                text += "We don't record or store audio from your meetings.\n"
            if doc.id == "cisco-privacy-statement":
                text += "Personal information may include audio, video and images.\n"
            fetched[(app, doc.id)] = tmp_path / f"{app}-{doc.id}.txt"
            fetched[(app, doc.id)].write_text(text)
    values = review_values(corpus, fetched)
    assert values["reviewed_apps"] == sorted(corpus.apps)
    assert values["p1_mute_apps"] == ["meet"]
    assert values["p1_no_audio_apps"] == ["meet", "whereby"]
    assert values["p1_silent_on_audio_apps"] == [
        "bluejeans", "discord", "gotomeeting", "jitsi", "slack", "teams", "zoom",
    ]  # fmt: skip
    assert values["p2_privacy_statement_audio"] == "mentions audio"
    assert values["source_of"]["p1_mute_apps"] == "policy-text"
    # one document missing: no P1 value, so the claim says why instead of a partial answer
    del fetched[("zoom", "zoom-privacy-statement")]
    partial = review_values(corpus, fetched)
    assert "zoom" not in partial["reviewed_apps"] and "p1_mute_apps" not in partial


def test_fetch_keeps_the_bytes_their_text_and_a_record(tmp_path):
    page = tmp_path / "privacy.html"
    page.write_text(
        "<html><head><title>x</title><script>var mic = 1;</script></head><body>"
        "<h1>Privacy</h1><p>We may process audio &amp; video.</p><ul><li>Diagnostics</li>"
        "<li>We keep logs for 7 years.</li></ul></body></html>",
        encoding="utf-8",
    )
    outs = {k: tmp_path / f"doc.{e}" for k, e in (("raw", "raw"), ("text", "txt"),
                                                   ("record", "json"))}  # fmt: skip
    record = fetch_document(page.as_uri(), outs, {"app": "zoom", "document": "x"})
    assert outs["raw"].read_bytes() == page.read_bytes()
    assert outs["text"].read_text() == (
        "Privacy\nWe may process audio & video.\nDiagnostics\nWe keep logs for 7 years.\n"
    )
    assert record == json.loads(outs["record"].read_text())
    assert record["sha256"] == __import__("hashlib").sha256(page.read_bytes()).hexdigest()
    assert record["text_from"].startswith("HTML") and record["fetched_at_utc"].endswith("+00:00")
    review = review_file(outs["text"])
    assert review.mentions["audio"] and [p for p, _ in review.retention] == ["for 7 years"]
    with pytest.raises(OSError):  # a document that cannot be had fails its job
        fetch_document((tmp_path / "absent.html").as_uri(), outs, {})
