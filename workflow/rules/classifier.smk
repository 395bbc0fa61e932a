# The background-activity classifier on the authors' released per-minute gains: Table 3 and
# Figures 8, 9, 12-14. Parse once, one job per window length n, then tables and figures.
# Training is most of the reference part's time: its jobs go first (priority 2), and so do the
# tables and confusion figures made from them (the last jobs, on the critical path); the jobs
# that need no model fill the cores around them, the longest of them (Figure 8, the user
# study's figures; priority 1) first, so that the run does not end on one of them alone.


CLASSIFIER_GAINS = reference_file("BgActivityClassifier/ParseSourceData/{name}.txt")


rule classifier_parse:
    input:
        code=code_of("classifier_parse"),
        verified="results/reference/verified.csv",
        dev=expand(CLASSIFIER_GAINS, name=config["classifier"]["splits"]["dev"]),
        eval1=expand(CLASSIFIER_GAINS, name=config["classifier"]["splits"]["eval1"]),
        eval2=expand(CLASSIFIER_GAINS, name=config["classifier"]["splits"]["eval2"]),
    output:
        minutes="results/classifier/reference/minutes.csv",
        recordings="results/tables/classifier_recordings.csv",
    log:
        "logs/classifier/parse.log",
    priority: 2
    conda:
        ANALYSIS_ENV
    params:
        splits=list(config["classifier"]["splits"]),
        classes=config["classifier"]["classes"],
    script:
        "../../scripts/classifier_parse.py"


rule classifier_window:
    input:
        code=code_of("classifier_window"),
        minutes="results/classifier/reference/minutes.csv",
    output:
        metrics="results/classifier/reference/n{window}/metrics.csv",
        confusion="results/classifier/reference/n{window}/confusion.csv",
        grid="results/classifier/reference/n{window}/grid.csv",
    log:
        "logs/classifier/n{window}.log",
    priority: 2
    conda:
        ANALYSIS_ENV
    threads: 1
    resources:
        runtime=10,
        mem_mb=1000,
    params:
        settings={k: config["classifier"][k] for k in CLASSIFIER_WINDOW_KEYS},
        labels=[c["code"] for c in config["classifier"]["classes"]],
    script:
        "../../scripts/classifier_window.py"


rule classifier_tables:
    input:
        code=code_of("classifier_tables"),
        metrics=expand(
            "results/classifier/reference/n{window}/metrics.csv",
            window=config["classifier"]["windows"],
        ),
        confusion=expand(
            "results/classifier/reference/n{window}/confusion.csv",
            window=config["classifier"]["windows"],
        ),
        grid=expand(
            "results/classifier/reference/n{window}/grid.csv",
            window=config["classifier"]["windows"],
        ),
        recordings="results/tables/classifier_recordings.csv",
    output:
        metrics=report(
            "results/tables/classifier_metrics.csv",
            caption="../report/classifier_metrics.rst",
            category="Classifier",
        ),
        confusion="results/tables/classifier_confusion.csv",
        grid="results/tables/classifier_grid.csv",
        values="results/values/classifier_reference.json",
    log:
        "logs/classifier/tables.log",
    priority: 2
    conda:
        ANALYSIS_ENV
    script:
        "../../scripts/classifier_tables.py"


rule classifier_dataset_sizes:
    input:
        code=code_of("classifier_dataset_sizes"),
        minutes="results/classifier/reference/minutes.csv",
        recordings="results/tables/classifier_recordings.csv",
    output:
        report(
            "results/tables/classifier_dataset_sizes.csv",
            caption="../report/classifier_dataset_sizes.rst",
            category="Classifier",
        ),
    log:
        "logs/classifier/dataset_sizes.log",
    conda:
        ANALYSIS_ENV
    params:
        windows=config["classifier"]["windows"],
        classes=config["classifier"]["classes"],
    script:
        "../../scripts/classifier_dataset_sizes.py"


rule classifier_gain_space:
    input:
        code=code_of("classifier_gain_space"),
        minutes="results/classifier/reference/minutes.csv",
    output:
        png=report(
            "results/figures/fig8_gain_space.png",
            caption="../report/fig8_gain_space.rst",
            category="Classifier",
        ),
        pdf="results/figures/fig8_gain_space.pdf",
    log:
        "logs/figures/fig8_gain_space.log",
    priority: 1
    conda:
        ANALYSIS_ENV
    params:
        classes=config["classifier"]["classes"],
        splits=config["classifier"]["splits"],
        seed=config["classifier"]["seed"],
    script:
        "../../scripts/classifier_gain_space.py"


rule classifier_confusion_figure:
    input:
        code=code_of("classifier_confusion_figure"),
        metrics="results/tables/classifier_metrics.csv",
        confusion="results/tables/classifier_confusion.csv",
    output:
        png=report(
            "results/figures/fig{number}_confusion_n{window}.png",
            caption="../report/classifier_confusion.rst",
            category="Classifier",
        ),
        pdf="results/figures/fig{number}_confusion_n{window}.pdf",
    log:
        "logs/figures/fig{number}_confusion_n{window}.log",
    wildcard_constraints:
        number="9|12|13|14",
    priority: 2
    conda:
        ANALYSIS_ENV
    params:
        classes=config["classifier"]["classes"],
        splits=config["classifier"]["splits"],
    script:
        "../../scripts/classifier_confusion_figure.py"
