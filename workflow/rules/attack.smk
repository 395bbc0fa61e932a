# The paper's attack on telemetry this project captures (stage `attack`; reallymuted.analysis.attack).
# The `attack` section's activity stimuli are sessions of the study matrix (the config loader
# adds them to sessions.stimuli), so the `collector_session` and `profile_session_analysis`
# rules capture and decode them like any other; here: the stimuli themselves, the decoded
# intervals with their input level, the Figure 7 and 8 analogues, and the reference
# classifier's code cross-validated over recordings, beside the reference results.
from reallymuted.analysis.attack import interval_seconds

# An activity stimulus from a directory of real recordings depends on its file, which the
# generic stimulus rule does not know about. Not in a replay, like the generic rule.
if ATTACK_STIMULI and not SESSIONS["replay"]:

    rule attack_stimulus:
        input:
            code=code_of("session_stimulus"),
            recording=lambda wildcards: [
                p for p in [ATTACK_STIMULI[wildcards.stimulus].get("path")] if p
            ],
        output:
            stimulus_wav("{stimulus}"),
        log:
            "logs/stimuli/{stimulus}.log",
        wildcard_constraints:
            stimulus=name_pattern(ATTACK_STIMULI),
        conda:
            TESTBED_ENV
        params:
            spec=lambda wildcards: ATTACK_STIMULI[wildcards.stimulus],
        script:
            "../../scripts/session_stimulus.py"

    ruleorder: attack_stimulus > session_stimulus


if ATTACK_SESSIONS:
    ATTACK_DIRS = [session_dir(*key) for key in ATTACK_SESSIONS]
    ATTACK_TABLES = [analysis_dir(*key) for key in ATTACK_SESSIONS]
    ATTACK_WINDOWS = config["attack"]["classifier"]["windows"]
    ATTACK_INTERVAL_S = interval_seconds(config)
    ATTACK_CLASSES = config["classifier"]["classes"]
    ATTACK_LABELS = [c["code"] for c in ATTACK_CLASSES]

    rule attack_telemetry:
        input:
            manifests=[f"{d}/manifest.json" for d in ATTACK_DIRS],
            mic_traces=[f"{d}/mic_trace.jsonl" for d in ATTACK_DIRS],
            telemetry=[f"{d}/telemetry.csv" for d in ATTACK_TABLES],
            stimuli=[stimulus_wav(key.stimulus) for key in ATTACK_SESSIONS],
            code=code_of("attack_telemetry"),
        output:
            table=report(
                "results/tables/attack_telemetry.csv",
                caption="../report/attack_telemetry.rst",
                category="Attack on captured telemetry",
            ),
            minutes="results/attack/minutes.csv",
            values="results/attack/telemetry_values.json",
        log:
            "logs/attack/telemetry.log",
        conda:
            ANALYSIS_ENV
        params:
            dirs=ATTACK_DIRS,
            stimuli=[key.stimulus for key in ATTACK_SESSIONS],
            specs={
                key.stimulus: ATTACK_STIMULI[key.stimulus] for key in ATTACK_SESSIONS
            },
            classes=ATTACK_CLASSES,
            windows=ATTACK_WINDOWS,
        script:
            "../../scripts/attack_telemetry.py"

    rule attack_window:
        input:
            code=code_of("attack_window"),
            minutes="results/attack/minutes.csv",
        output:
            metrics="results/attack/n{window}/metrics.csv",
            confusion="results/attack/n{window}/confusion.csv",
            grid="results/attack/n{window}/grid.csv",
            folds="results/attack/n{window}/folds.csv",
        log:
            "logs/attack/n{window}.log",
        conda:
            ANALYSIS_ENV
        threads: 1
        resources:
            runtime=10,
            mem_mb=1000,
        params:
            settings={
                **{k: config["classifier"][k] for k in CLASSIFIER_WINDOW_KEYS},
                "models": config["attack"]["classifier"]["models"],
            },
            labels=ATTACK_LABELS,
        script:
            "../../scripts/attack_window.py"

    rule attack_tables:
        input:
            code=code_of("attack_tables"),
            metrics=expand(
                "results/attack/n{window}/metrics.csv", window=ATTACK_WINDOWS
            ),
            confusion=expand(
                "results/attack/n{window}/confusion.csv", window=ATTACK_WINDOWS
            ),
            folds=expand("results/attack/n{window}/folds.csv", window=ATTACK_WINDOWS),
            values="results/attack/telemetry_values.json",
            reference=(
                ["results/tables/classifier_metrics.csv"]
                if stage_on("reference")
                else []
            ),
        output:
            metrics=report(
                "results/tables/attack_classifier_metrics.csv",
                caption="../report/attack_classifier_metrics.rst",
                category="Attack on captured telemetry",
            ),
            confusion="results/tables/attack_confusion.csv",
            curve=report(
                "results/tables/attack_learning_curve.csv",
                caption="../report/attack_learning_curve_table.rst",
                category="Attack on captured telemetry",
            ),
            values="results/values/attack.json",
        log:
            "logs/attack/tables.log",
        conda:
            ANALYSIS_ENV
        params:
            interval_s=ATTACK_INTERVAL_S,
        script:
            "../../scripts/attack_tables.py"

    rule attack_fig7:
        input:
            code=code_of("attack_fig7_gain_vs_power"),
            table="results/tables/attack_telemetry.csv",
            values="results/attack/telemetry_values.json",
        output:
            png=report(
                "results/figures/fig7_gain_vs_power.png",
                caption="../report/fig7_gain_vs_power.rst",
                category="Attack on captured telemetry",
            ),
            pdf="results/figures/fig7_gain_vs_power.pdf",
        log:
            "logs/figures/fig7_gain_vs_power.log",
        conda:
            ANALYSIS_ENV
        script:
            "../../scripts/attack_fig7_gain_vs_power.py"

    rule attack_fig8:
        input:
            code=code_of("attack_fig8_gain_space"),
            minutes="results/attack/minutes.csv",
        output:
            png=report(
                "results/figures/fig8_gain_space_captured.png",
                caption="../report/fig8_gain_space_captured.rst",
                category="Attack on captured telemetry",
            ),
            pdf="results/figures/fig8_gain_space_captured.pdf",
        log:
            "logs/figures/fig8_gain_space_captured.log",
        conda:
            ANALYSIS_ENV
        params:
            classes=ATTACK_CLASSES,
            interval_s=ATTACK_INTERVAL_S,
            seed=config["classifier"]["seed"],
        script:
            "../../scripts/attack_fig8_gain_space.py"

    rule attack_confusion_figure:
        input:
            code=code_of("attack_confusion_figure"),
            metrics="results/tables/attack_classifier_metrics.csv",
            confusion="results/tables/attack_confusion.csv",
        output:
            png=report(
                "results/figures/attack_confusion.png",
                caption="../report/attack_confusion.rst",
                category="Attack on captured telemetry",
            ),
            pdf="results/figures/attack_confusion.pdf",
        log:
            "logs/figures/attack_confusion.log",
        conda:
            ANALYSIS_ENV
        params:
            window=max(ATTACK_WINDOWS),
            classes=ATTACK_CLASSES,
            interval_s=ATTACK_INTERVAL_S,
        script:
            "../../scripts/attack_confusion_figure.py"

    rule attack_learning_curve_figure:
        input:
            code=code_of("attack_learning_curve_figure"),
            curve="results/tables/attack_learning_curve.csv",
        output:
            png=report(
                "results/figures/attack_learning_curve.png",
                caption="../report/attack_learning_curve.rst",
                category="Attack on captured telemetry",
            ),
            pdf="results/figures/attack_learning_curve.pdf",
        log:
            "logs/figures/attack_learning_curve.log",
        conda:
            ANALYSIS_ENV
        script:
            "../../scripts/attack_learning_curve_figure.py"


# Not in the paper: can an on-path observer of the encrypted muted traffic (sizes and timing
# only) tell the background activity? One test per attack app and mute mode.
if LEAKAGE_SESSIONS:
    LEAKAGE_DIRS = [session_dir(*key) for key in LEAKAGE_SESSIONS]
    LEAKAGE_TABLES = [analysis_dir(*key) for key in LEAKAGE_SESSIONS]

    rule attack_leakage:
        input:
            manifests=[f"{d}/manifest.json" for d in LEAKAGE_DIRS],
            events=[f"{d}/events.jsonl" for d in LEAKAGE_DIRS],
            packets=[f"{d}/packets.parquet" for d in LEAKAGE_TABLES],
            code=code_of("attack_leakage"),
        output:
            table=report(
                "results/tables/leakage.csv",
                caption="../report/leakage_table.rst",
                category="Attack on captured telemetry",
            ),
            windows="results/attack/leakage_windows.csv",
        log:
            "logs/attack/leakage.log",
        conda:
            ANALYSIS_ENV
        params:
            dirs=LEAKAGE_DIRS,
            stimuli=[ATTACK_STIMULI[key.stimulus] for key in LEAKAGE_SESSIONS],
            window_s=config["attack"]["leakage"]["window_s"],
            bootstrap=config["attack"]["leakage"]["bootstrap"],
            permutations=config["attack"]["leakage"]["permutations"],
            seed=config["classifier"]["seed"],
        script:
            "../../scripts/attack_leakage.py"

    rule attack_leakage_figure:
        input:
            code=code_of("attack_leakage_figure"),
            table="results/tables/leakage.csv",
        output:
            png=report(
                "results/figures/leakage.png",
                caption="../report/leakage.rst",
                category="Attack on captured telemetry",
            ),
            pdf="results/figures/leakage.pdf",
        log:
            "logs/figures/leakage.log",
        conda:
            ANALYSIS_ENV
        script:
            "../../scripts/attack_leakage_figure.py"


# The attack with and without the OS-level mute (issue 15, docs/guard.md): the telemetry apps'
# guarded twins decoded and classified as above, at the longest window, then both arms beside
# each other with the leakage test's rows of every attack app and its twin.
if ATTACK_SESSIONS and ATTACK_GUARDED_SESSIONS:
    GUARDED_DIRS = [session_dir(*key) for key in ATTACK_GUARDED_SESSIONS]
    GUARDED_TABLES = [analysis_dir(*key) for key in ATTACK_GUARDED_SESSIONS]
    GUARDED_WINDOW = max(ATTACK_WINDOWS)
    ATTACK_GUARD_TWINS = {
        guarded: bare
        for guarded, bare in GUARD_TWINS.items()
        if guarded in config["attack"]["apps"]
    }

    use rule attack_telemetry as attack_telemetry_guarded with:
        input:
            manifests=[f"{d}/manifest.json" for d in GUARDED_DIRS],
            mic_traces=[f"{d}/mic_trace.jsonl" for d in GUARDED_DIRS],
            telemetry=[f"{d}/telemetry.csv" for d in GUARDED_TABLES],
            stimuli=[stimulus_wav(key.stimulus) for key in ATTACK_GUARDED_SESSIONS],
            code=code_of("attack_telemetry"),
        output:
            table="results/attack/guarded/telemetry.csv",
            minutes="results/attack/guarded/minutes.csv",
            values="results/attack/guarded/telemetry_values.json",
        log:
            "logs/attack/guarded/telemetry.log",
        params:
            dirs=GUARDED_DIRS,
            stimuli=[key.stimulus for key in ATTACK_GUARDED_SESSIONS],
            specs={
                key.stimulus: ATTACK_STIMULI[key.stimulus]
                for key in ATTACK_GUARDED_SESSIONS
            },
            classes=ATTACK_CLASSES,
            windows=[GUARDED_WINDOW],

    use rule attack_window as attack_window_guarded with:
        input:
            code=code_of("attack_window"),
            minutes="results/attack/guarded/minutes.csv",
        output:
            metrics="results/attack/guarded/n{window}/metrics.csv",
            confusion="results/attack/guarded/n{window}/confusion.csv",
            grid="results/attack/guarded/n{window}/grid.csv",
            folds="results/attack/guarded/n{window}/folds.csv",
        log:
            "logs/attack/guarded/n{window}.log",

    rule attack_guard_tables:
        input:
            code=code_of("attack_guard_tables"),
            telemetry_off="results/tables/attack_telemetry.csv",
            telemetry_on="results/attack/guarded/telemetry.csv",
            minutes_off="results/attack/minutes.csv",
            minutes_on="results/attack/guarded/minutes.csv",
            metrics_off=f"results/attack/n{GUARDED_WINDOW}/metrics.csv",
            metrics_on=f"results/attack/guarded/n{GUARDED_WINDOW}/metrics.csv",
            folds_off=f"results/attack/n{GUARDED_WINDOW}/folds.csv",
            folds_on=f"results/attack/guarded/n{GUARDED_WINDOW}/folds.csv",
            leakage="results/tables/leakage.csv",
        output:
            table=report(
                "results/tables/attack_guard.csv",
                caption="../report/attack_guard_table.rst",
                category="The OS-level mute",
            ),
            png=report(
                "results/figures/attack_guard.png",
                caption="../report/attack_guard_figure.rst",
                category="The OS-level mute",
            ),
            pdf="results/figures/attack_guard.pdf",
            values="results/values/attack_guard.json",
        log:
            "logs/attack/guard.log",
        conda:
            ANALYSIS_ENV
        params:
            twins=ATTACK_GUARD_TWINS,
            settings={
                "window": GUARDED_WINDOW,
                "seed": config["classifier"]["seed"],
                "bootstrap": config["attack"]["leakage"]["bootstrap"],
                "permutations": config["attack"]["leakage"]["permutations"],
            },
        script:
            "../../scripts/attack_guard_tables.py"


# `snakemake -c2 attack`: the attack alone (its sessions, tables, figures and values).
rule attack:
    input:
        attack_outputs(),
