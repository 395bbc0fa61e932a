# The vendors' own client libraries (drivers sdk and sdk-preview; docs/sdk.md): per session,
# the microphone tracks the SDK opened, what its own mute did to them and who did it, the
# requests the page kept local, and every telemetry record the SDK produced, decoded.


rule sdk_tables:
    input:
        manifests=lambda wildcards: sdk_session_files("manifest.json"),
        events=lambda wildcards: sdk_session_files("events.jsonl"),
        collectors=lambda wildcards: sdk_session_files("collector.jsonl"),
        policy="results/tables/mic_policy.csv",
        states="results/tables/session_states.csv",
        code=code_of("sdk_tables"),
    output:
        sessions=report(
            "results/tables/sdk_sessions.csv",
            caption="../report/sdk_sessions.rst",
            category="The vendors' own code",
        ),
        telemetry=report(
            "results/tables/sdk_telemetry.csv",
            caption="../report/sdk_telemetry.rst",
            category="The vendors' own code",
        ),
        values="results/values/sdk.json",
    log:
        "logs/sdk/tables.log",
    conda:
        ANALYSIS_ENV
    script:
        "../../scripts/sdk_tables.py"


rule telemetry_compared:
    input:
        unpack(telemetry_compared_inputs),
        code=code_of("telemetry_compared"),
    output:
        report(
            "results/tables/telemetry_muted_compared.csv",
            caption="../report/telemetry_muted_compared.rst",
            category="The vendors' own code",
        ),
    log:
        "logs/sdk/telemetry_compared.log",
    conda:
        ANALYSIS_ENV
    script:
        "../../scripts/telemetry_compared.py"
