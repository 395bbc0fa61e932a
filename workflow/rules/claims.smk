# The claims table: the paper's claims beside the values this run computed.


def claims_absent_values():
    """Why this run has no values file of a stage, per file stem (claims_value_files() lists
    the present ones): the claims that need it say "not measured here" with this reason.
    """
    reasons = {
        stem: "stage reference switched off (config.yaml stages.reference)"
        for stem in ("userstudy", "telemetry_reference", "classifier_reference")
    }
    reasons["testbed"] = "stage sessions switched off (config.yaml stages.sessions)"
    if not stage_on("attack"):
        reasons["attack"] = "stage attack switched off (config.yaml stages.attack)"
    elif not stage_on("sessions"):
        reasons["attack"] = (
            "stage sessions switched off (the attack runs on its sessions)"
        )
    else:
        reasons["attack"] = "the attack's telemetry apps are not in sessions.select"
    present = {Path(path).stem for path in claims_value_files()}
    return {stem: why for stem, why in reasons.items() if stem not in present}


rule claims:
    input:
        claims=REPO / "workflow/resources/paper_claims.yaml",
        values=claims_value_files(),
        code=package_code("claims"),
    output:
        csv=report(
            "results/tables/claims.csv",
            caption="../report/claims.rst",
            category="Claims",
        ),
        md="results/tables/claims.md",
    log:
        "logs/claims.log",
    conda:
        ANALYSIS_ENV
    params:
        absent=claims_absent_values(),
    script:
        "../../scripts/claims.py"
