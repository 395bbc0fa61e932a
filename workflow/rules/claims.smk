# The claims table: the paper's claims beside the values this run computed.
from reallymuted.analysis.attack import attack_sessions
from reallymuted.claims import absent_reasons


rule claims:
    input:
        claims=REPO / "workflow/resources/paper_claims.yaml",
        values=claims_value_files(),
        code=code_of("claims"),
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
        # why each stage's values file this run lacks is absent (stage off, apps not selected)
        absent=absent_reasons(
            config["stages"],
            bool(attack_sessions(config)),
            claims_value_files(),
            sdk_selected=bool(sdk_outputs()),
        ),
    script:
        "../../scripts/claims.py"
