"""Rule classifier_window: train and evaluate every model for one window length n."""

from reallymuted.analysis import classifier_training
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
classifier_training.window_to_files(
    snakemake.input.minutes,
    int(snakemake.wildcards.window),
    snakemake.params.settings,
    dict(snakemake.output.items()),
    labels=snakemake.params.labels,
    threads=snakemake.threads,
)
