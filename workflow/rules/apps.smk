# The ten apps: the Table 2 analogue from the registry, and the headline table and figure that
# set each app's paper finding beside every source of evidence this run has for it.

APP_REGISTRY = REPO / "workflow/apps.yaml"


rule apps_platforms:
    input:
        registry=APP_REGISTRY,
        schema=REPO / "workflow/schemas/apps.schema.yaml",
        code=code_of("apps_platforms"),
    output:
        report(
            "results/tables/apps_platforms.csv",
            caption="../report/apps_platforms.rst",
            category="The ten apps",
        ),
    log:
        "logs/apps/platforms.log",
    conda:
        ANALYSIS_ENV
    script:
        "../../scripts/apps_platforms.py"


rule apps_headline:
    input:
        registry=APP_REGISTRY,
        policy="results/tables/mic_policy.csv",
        states="results/tables/session_states.csv",
        flows="results/tables/session_flows.csv",
        checks=lambda wildcards: telemetry_session_outputs()[1:2],
        code=code_of("apps_headline"),
    output:
        table=report(
            "results/tables/apps_headline.csv",
            caption="../report/apps_headline.rst",
            category="The ten apps",
        ),
        png=report(
            "results/figures/apps_side_by_side.png",
            caption="../report/apps_side_by_side.rst",
            category="The ten apps",
        ),
        pdf="results/figures/apps_side_by_side.pdf",
    log:
        "logs/apps/headline.log",
    conda:
        ANALYSIS_ENV
    script:
        "../../scripts/apps_headline.py"
