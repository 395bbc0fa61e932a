# The OS-level mute the paper recommends (docs/guard.md): every app of sessions.apps with
# `guard: true` ran `reallymuted guard` in its sessions; here it is set beside its twin.


rule guard_tables:
    input:
        states="results/tables/session_states.csv",
        code=code_of("guard_tables"),
    output:
        table=report(
            "results/tables/guard.csv",
            caption="../report/guard_table.rst",
            category="The OS-level mute",
        ),
        png=report(
            "results/figures/guard.png",
            caption="../report/guard_figure.rst",
            category="The OS-level mute",
        ),
        pdf="results/figures/guard.pdf",
        values="results/values/guard.json",
    log:
        "logs/guard/tables.log",
    conda:
        ANALYSIS_ENV
    params:
        twins=GUARD_TWINS,
    script:
        "../../scripts/guard_tables.py"
