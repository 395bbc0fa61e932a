# Policy against behaviour (docs/policy.md): what each app's privacy policy says about the
# microphone and audio-derived data while muted (workflow/resources/policies.yaml), beside what
# each source of this run measured. Built offline from the corpus; policy.fetch (off by
# default, needs internet) also keeps each listed document's current text.
from reallymuted.policy.corpus import load_corpus

POLICY_CORPUS = REPO / "workflow/resources/policies.yaml"
POLICY_SCHEMA = REPO / "workflow/schemas/policies.schema.yaml"


def policy_fetch_outputs():
    """Every listed document's current text and its record, when policy.fetch is on."""
    if not config["policy"]["fetch"]:
        return []
    corpus = load_corpus(POLICY_CORPUS, POLICY_SCHEMA)
    return [
        f"results/policies/{app}/{doc.id}.{ext}"
        for app in corpus.apps
        for doc in corpus.documents[app]
        for ext in ("raw", "txt", "json")
    ]


def policy_behaviour_inputs(wildcards):
    """What this run measured (the ten apps' headline, the released Webex record) and, with
    policy.fetch on, the documents' current texts."""
    inputs = {}
    if "results/tables/apps_headline.csv" in apps_outputs():
        inputs["headline"] = "results/tables/apps_headline.csv"
    if stage_on("reference"):
        inputs["telemetry"] = "results/tables/telemetry_reference.csv"
    fetched = [path for path in policy_fetch_outputs() if path.endswith(".txt")]
    if fetched:
        inputs["fetched"] = fetched
    return inputs


rule policy_behaviour:
    input:
        unpack(policy_behaviour_inputs),
        corpus=POLICY_CORPUS,
        schema=POLICY_SCHEMA,
        registry=REPO / "workflow/apps.yaml",
        registry_schema=REPO / "workflow/schemas/apps.schema.yaml",
        code=code_of("policy_behaviour"),
    output:
        table=report(
            "results/tables/policy_behaviour.csv",
            caption="../report/policy_behaviour_table.rst",
            category="Policy against behaviour",
        ),
        png=report(
            "results/figures/policy_behaviour.png",
            caption="../report/policy_behaviour_figure.rst",
            category="Policy against behaviour",
        ),
        pdf="results/figures/policy_behaviour.pdf",
        values="results/values/policy.json",
    log:
        "logs/policy/behaviour.log",
    conda:
        ANALYSIS_ENV
    script:
        "../../scripts/policy_behaviour.py"


rule policy_fetch:
    input:
        corpus=POLICY_CORPUS,
        schema=POLICY_SCHEMA,
        code=code_of("policy_fetch"),
    output:
        raw="results/policies/{app}/{document}.raw",
        text="results/policies/{app}/{document}.txt",
        record="results/policies/{app}/{document}.json",
    log:
        "logs/policy/fetch_{app}_{document}.log",
    retries: 1
    conda:
        ANALYSIS_ENV
    script:
        "../../scripts/policy_fetch.py"
