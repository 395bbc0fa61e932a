# Policy against behaviour (docs/policy.md): what each app's privacy policy says about the
# microphone and audio-derived data while muted (workflow/resources/policies.yaml), beside what
# each source of this run measured. Built offline from the corpus; policy.fetch (off by
# default, needs internet) also keeps each listed document's current text.


rule policy_behaviour:
    input:
        unpack(policy_behaviour_inputs),
        corpus=POLICIES,
        schema=POLICIES_SCHEMA,
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
        corpus=POLICIES,
        schema=POLICIES_SCHEMA,
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
