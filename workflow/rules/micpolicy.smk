# Per session: the raw evidence as tables (packets.parquet, mic_reads.parquet), microphone use
# and traffic per mute state, the policy label at both witnesses, and a timeline figure; then
# the study's tables across sessions.


# One job per session, not three (extraction, analysis, timeline): a 10 000-session study
# plans in about 26 s (`make bench`, planning_scale; Snakemake's cost per job is most of it,
# docs/layout.md), and each session's evidence is read once.
rule session_analysis:
    input:
        manifest=f"{SESSION_DIR}/manifest.json",
        events=f"{SESSION_DIR}/events.jsonl",
        traffic=f"{SESSION_DIR}/traffic.pcapng",
        mic_trace=f"{SESSION_DIR}/mic_trace.jsonl",
        code=code_of("session_analysis"),
    output:
        **per_session_analysis_files(),
    log:
        "logs/sessions-analysis/{app}/{mode}-{stimulus}/rep{rep}.log",
    # Not the profiles' sessions, which rule `profile_session_analysis` analyses
    # (telemetry_sessions.smk): a file only one rule can make plans one job, not two.
    wildcard_constraints:
        app=name_pattern(set(SESSIONS["apps"]) - set(PROFILE_APPS)),
    conda:
        ANALYSIS_ENV
    params:
        outputs=output_options,
    # a command, not `script:` (common.smk, script_command)
    shell:
        script_command("session_analysis") + " --log {log:q}"
        " --manifest {input.manifest:q} {params.outputs}"


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
