# The claims table: the paper's numbers beside the values this run computed.


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
    script:
        "../../scripts/claims.py"
