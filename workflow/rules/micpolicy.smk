# Per session: microphone use and traffic per mute state, the policy label at both witnesses,
# and a timeline figure; then the study's tables across sessions.


rule session_analysis:
    input:
        manifest=f"{SESSION_DIR}/manifest.json",
        events=f"{SESSION_DIR}/events.jsonl",
        packets=f"{SESSION_TABLES}/packets.parquet",
        reads=f"{SESSION_TABLES}/mic_reads.parquet",
        code=code_of("session_analysis"),
    output:
        states=f"{SESSION_TABLES}/states.csv",
        policy=f"{SESSION_TABLES}/policy.json",
        flows=f"{SESSION_TABLES}/flows.csv",
    log:
        "logs/micpolicy/{app}/{mode}-{stimulus}/rep{rep}.log",
    conda:
        ANALYSIS_ENV
    script:
        "../../scripts/session_analysis.py"


rule session_timeline:
    input:
        manifest=f"{SESSION_DIR}/manifest.json",
        events=f"{SESSION_DIR}/events.jsonl",
        packets=f"{SESSION_TABLES}/packets.parquet",
        reads=f"{SESSION_TABLES}/mic_reads.parquet",
        code=code_of("session_timeline"),
    output:
        png=report(
            timeline("{app}", "{mode}", "{stimulus}", "{rep}", "png"),
            caption="../report/session_timeline.rst",
            category="Testbed sessions",
            subcategory="{app}",
        ),
        pdf=timeline("{app}", "{mode}", "{stimulus}", "{rep}", "pdf"),
    log:
        "logs/figures/timelines/{app}/{mode}-{stimulus}-rep{rep}.log",
    conda:
        ANALYSIS_ENV
    script:
        "../../scripts/session_timeline.py"


rule session_tables:
    input:
        states=lambda wildcards: session_files("states.csv"),
        policies=lambda wildcards: session_files("policy.json"),
        flows=lambda wildcards: session_files("flows.csv"),
        code=code_of("session_tables"),
    output:
        states=report(
            "results/tables/session_states.csv",
            caption="../report/session_states.rst",
            category="Testbed sessions",
        ),
        policy=report(
            "results/tables/mic_policy.csv",
            caption="../report/mic_policy.rst",
            category="Testbed sessions",
        ),
        flows="results/tables/session_flows.csv",
        values="results/values/testbed.json",
    log:
        "logs/micpolicy/tables.log",
    conda:
        ANALYSIS_ENV
    script:
        "../../scripts/session_tables.py"
