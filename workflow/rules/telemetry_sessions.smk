# Testbed profiles (driver `profile`, source testbed-profile): their sessions publish one more
# evidence file, the telemetry collector's log (collector.jsonl); then, per session, the
# telemetry records are decoded from the capture (pyshark) and matched one to one with the
# collector's log, and the study gets its telemetry tables and named values.

# The `session` rule with the extra evidence file declared: the job of a session whose driver
# runs the collector (profiles, sdk pages) owns collector.jsonl, other apps' sessions never
# have one. (Under `sessions.replay` nothing is captured and collector.jsonl, like the rest of
# the raw evidence, is already there.) Defined only when such apps are configured: an empty
# app constraint would match every app.
if COLLECTOR_APPS and not SESSIONS["replay"]:

    use rule session as collector_session with:
        output:
            manifest=f"{SESSION_DIR}/manifest.json",
            events=f"{SESSION_DIR}/events.jsonl",
            traffic=f"{SESSION_DIR}/traffic.pcapng",
            mic_trace=f"{SESSION_DIR}/mic_trace.jsonl",
            client_log=f"{SESSION_DIR}/client.log",
            collector=f"{SESSION_DIR}/collector.jsonl",
        wildcard_constraints:
            app=name_pattern(COLLECTOR_APPS),
            mode=name_pattern(MODES),
            stimulus=name_pattern(SESSIONS["stimuli"]),
            rep=r"\d+",

    ruleorder: collector_session > session


if PROFILE_APPS:

    # A profile's session is analysed like any other and, in the same job, its telemetry is
    # decoded: one job per session, not two (a tenth fewer jobs for the study to plan, and
    # each session's Python start-up and imports paid once).
    use rule session_analysis as profile_session_analysis with:
        input:
            manifest=f"{SESSION_DIR}/manifest.json",
            events=f"{SESSION_DIR}/events.jsonl",
            traffic=f"{SESSION_DIR}/traffic.pcapng",
            mic_trace=f"{SESSION_DIR}/mic_trace.jsonl",
            collector=f"{SESSION_DIR}/collector.jsonl",
            code=code_of("session_analysis", "reallymuted.analysis.telemetry.sessions"),
        output:
            **per_session_analysis_files(),
            telemetry=f"{SESSION_TABLES}/telemetry.csv",
            telemetry_check=f"{SESSION_TABLES}/telemetry_check.json",
        wildcard_constraints:
            app=name_pattern(PROFILE_APPS),

    rule telemetry_sessions_tables:
        input:
            tables=lambda wildcards: session_files("telemetry.csv", PROFILE_APPS),
            checks=lambda wildcards: session_files("telemetry_check.json", PROFILE_APPS),
            code=code_of("telemetry_sessions_tables"),
        output:
            table=report(
                "results/tables/telemetry_sessions.csv",
                caption="../report/telemetry_sessions.rst",
                category="Testbed profiles",
            ),
            check=report(
                "results/tables/telemetry_sessions_check.csv",
                caption="../report/telemetry_sessions_check.rst",
                category="Testbed profiles",
            ),
            values="results/values/telemetry_sessions.json",
        log:
            "logs/telemetry/sessions_tables.log",
        conda:
            ANALYSIS_ENV
        script:
            "../../scripts/telemetry_sessions_tables.py"
