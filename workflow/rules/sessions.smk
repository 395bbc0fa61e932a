# Testbed sessions: one real client through the mute schedule, recorded three ways (packets,
# OS-level and app-level microphone reads). Raw evidence in SESSION_DIR (common.smk); the
# contract is docs/evidence.md.
#
# `sessions.parallel` sessions run at once: each job takes one `testbed_session`, whose global
# limit is that number unless given on the command line (--resources testbed_session=N). Each
# session has its own network namespace, sound server, capture and tracer; `make bench`
# (study_parallel) runs the study's sessions one at a time, two at a time and one at a time
# again, and compares what they measured (docs/testbed.md: with the microphone real-time, two
# at a time moved nothing by more than two serial runs differ, so the default is 2). A session
# holds one core of `-c`: four at once on 2 cores (the study's other jobs beside them) made 21
# of 99 sessions lose a tracer attach and doubled the feeder's worst lateness (docs/testbed.md,
# December 2026). A failed session exits non-zero and leaves manifest.failed.json (an
# undeclared file: Snakemake deletes a failed job's outputs).
import json

from reallymuted.testbed.progress import write_plan
from reallymuted.testbed.spec import rule_params

# One app's session settings, built once per app and shared by its jobs (not once per job),
# as the JSON its session script reads.
SESSION_SETTINGS = {
    app: json.dumps(rule_params(SESSIONS, app), sort_keys=True)
    for app in SESSIONS["apps"]
}

if "testbed_session" not in workflow.global_resources:
    workflow.register_resource("testbed_session", SESSIONS["parallel"])


# What this run sets out to capture: each session job, when it ends, prints how many are done
# and the time left (reallymuted.testbed.progress).
onstart:
    if stage_on("sessions") and not SESSIONS["replay"]:
        limit = workflow.global_resources["testbed_session"]
        write_plan(
            [session_dir(*key) for key in SESSION_MATRIX],
            int(getattr(limit, "value", limit)),  # a Resource in Snakemake 9
        )


# With `sessions.replay` (artifact verification, ARTIFACT-APPENDIX.md) neither rule exists. A
# stimulus is what a session played into the microphone: evidence, so a replay reads the
# played file and never makes one.
if not SESSIONS["replay"]:

    rule session_stimulus:
        input:
            code=code_of("session_stimulus"),
        output:
            stimulus_wav("{stimulus}"),
        log:
            "logs/stimuli/{stimulus}.log",
        wildcard_constraints:
            stimulus=name_pattern(SESSIONS["stimuli"]),
        conda:
            TESTBED_ENV
        params:
            spec=lambda wildcards: SESSIONS["stimuli"][wildcards.stimulus],
        script:
            "../../scripts/session_stimulus.py"

    # Nor is anything captured: the raw evidence already in results/raw/ is a plain input of
    # extraction (common.smk stops the run if a session of the matrix is missing there).
    rule session:
        input:
            stimulus=stimulus_wav("{stimulus}"),
            code=lambda wildcards: session_code(
                SESSIONS["apps"][wildcards.app]["driver"]
            ),
        output:
            manifest=f"{SESSION_DIR}/manifest.json",
            events=f"{SESSION_DIR}/events.jsonl",
            traffic=f"{SESSION_DIR}/traffic.pcapng",
            mic_trace=f"{SESSION_DIR}/mic_trace.jsonl",
            client_log=f"{SESSION_DIR}/client.log",
        log:
            "logs/sessions/{app}/{mode}-{stimulus}/rep{rep}.log",
        # Not the apps whose sessions rule `collector_session` captures (telemetry_sessions.smk):
        # a file only one rule can make plans one job, not two and a rule order.
        wildcard_constraints:
            app=name_pattern(set(SESSIONS["apps"]) - set(COLLECTOR_APPS)),
            mode=name_pattern(MODES),
            stimulus=name_pattern(SESSIONS["stimuli"]),
            rep=r"\d+",
        retries: SESSIONS["retries"]
        conda:
            TESTBED_ENV
        threads: 1
        resources:
            testbed_session=1,
        params:
            settings=lambda wildcards: SESSION_SETTINGS[wildcards.app],
        # a command, not `script:` (common.smk, script_command)
        shell:
            script_command("session_run") + " --log {log:q} --app {wildcards.app}"
            " --mode {wildcards.mode} --stimulus {wildcards.stimulus} --rep {wildcards.rep}"
            " --stimulus-wav {input.stimulus:q} --manifest {output.manifest:q}"
            " --settings {params.settings:q}"
