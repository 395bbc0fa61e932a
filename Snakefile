# reallymuted: what video-conferencing apps do with the microphone while you are muted.
# One invocation runs the whole study; each stage lives in its own rule file.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/reference.smk"
include: "workflow/rules/userstudy.smk"
include: "workflow/rules/telemetry.smk"
include: "workflow/rules/classifier.smk"
include: "workflow/rules/apps.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/sessions.smk"
include: "workflow/rules/micpolicy.smk"
include: "workflow/rules/telemetry_sessions.smk"
include: "workflow/rules/sdk.smk"
include: "workflow/rules/guard.smk"
include: "workflow/rules/attack.smk"
include: "workflow/rules/policy.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
