# The released user study: counts behind Figures 1-5, Cohen's kappa, IUIPC-8.


rule userstudy_tables:
    input:
        verified="results/reference/verified.csv",
        survey=reference_file("UserStudy/clean_survey_file_total.csv"),
        kappa_q1=reference_file("UserStudy/Q61Cohen.csv"),
        kappa_q2=reference_file("UserStudy/Q104Cohen.csv"),
        kappa_q3=reference_file("UserStudy/Q62Cohen.csv"),
        code=code_of("userstudy_tables"),
    output:
        codes="results/tables/userstudy_codes.csv",
        statements="results/tables/userstudy_statements.csv",
        combinations="results/tables/userstudy_combinations.csv",
        kappa="results/tables/userstudy_kappa.csv",
        iuipc="results/tables/userstudy_iuipc.csv",
        values="results/values/userstudy.json",
    log:
        "logs/userstudy/tables.log",
    conda:
        ANALYSIS_ENV
    script:
        "../../scripts/userstudy_tables.py"


rule userstudy_figure:
    input:
        codes="results/tables/userstudy_codes.csv",
        statements="results/tables/userstudy_statements.csv",
        combinations="results/tables/userstudy_combinations.csv",
        iuipc="results/tables/userstudy_iuipc.csv",
        code=code_of("userstudy_figure"),
    output:
        png=report(
            "results/figures/{figure}.png",
            caption="../report/userstudy_figure.rst",
            category="User study",
        ),
        pdf="results/figures/{figure}.pdf",
    log:
        "logs/figures/{figure}.log",
    wildcard_constraints:
        figure="|".join(USERSTUDY_FIGURES),
    conda:
        ANALYSIS_ENV
    script:
        "../../scripts/userstudy_figure.py"
