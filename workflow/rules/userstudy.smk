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


# Figures 1-5 in one job: each takes a fraction of the second that starting Python with pandas
# and matplotlib takes.
rule userstudy_figure:
    input:
        codes="results/tables/userstudy_codes.csv",
        statements="results/tables/userstudy_statements.csv",
        combinations="results/tables/userstudy_combinations.csv",
        iuipc="results/tables/userstudy_iuipc.csv",
        code=code_of("userstudy_figure"),
    output:
        fig1=report(
            "results/figures/fig1_q1_why_mute.png",
            caption="../report/fig1_q1_why_mute.rst",
            category="User study",
        ),
        fig2=report(
            "results/figures/fig2_q2_background_activities.png",
            caption="../report/fig2_q2_background_activities.rst",
            category="User study",
        ),
        fig3=report(
            "results/figures/fig3_q3_what_mute_does.png",
            caption="../report/fig3_q3_what_mute_does.rst",
            category="User study",
        ),
        fig4=report(
            "results/figures/fig4_q4_mic_access_believed.png",
            caption="../report/fig4_q4_mic_access_believed.rst",
            category="User study",
        ),
        fig5=report(
            "results/figures/fig5_q5_mic_access_wanted.png",
            caption="../report/fig5_q5_mic_access_wanted.rst",
            category="User study",
        ),
        pdf=expand("results/figures/{figure}.pdf", figure=USERSTUDY_FIGURES),
    log:
        "logs/figures/userstudy.log",
    priority: 1  # a long job that needs no model: early among the fillers (classifier.smk)
    conda:
        ANALYSIS_ENV
    script:
        "../../scripts/userstudy_figure.py"
