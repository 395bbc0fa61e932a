"""Rule attack_window: the classifier on captured telemetry for one window length n."""

from reallymuted.analysis import attack_classifier
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
attack_classifier.window_to_files(
    snakemake.input.minutes,
    int(snakemake.wildcards.window),
    snakemake.params.settings,
    dict(snakemake.output.items()),
    labels=snakemake.params.labels,
    threads=snakemake.threads,
)
