# Webex wmequality telemetry: decode the authors' released record (claim T1).


rule telemetry_reference:
    input:
        verified="results/reference/verified.csv",
        dump=reference_file("UserStudy/webex-dump.json"),
        code=code_of("telemetry_reference"),
    output:
        table="results/tables/telemetry_reference.csv",
        problems="results/tables/telemetry_reference_problems.csv",
        values="results/values/telemetry_reference.json",
    log:
        "logs/telemetry/reference.log",
    priority: 1  # the claims wait for it (and for the policy table made from it)
    conda:
        ANALYSIS_ENV
    params:
        name="UserStudy/webex-dump.json",
    script:
        "../../scripts/telemetry_reference.py"
