"""Rule attack_tables: per-window results -> the attack's metrics, learning curve and values."""

from reallymuted.analysis import attack_classifier
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
attack_classifier.tables_to_files(
    list(snakemake.input.metrics),
    list(snakemake.input.confusion),
    list(snakemake.input.folds),
    snakemake.input.values,
    snakemake.params.interval_s,
    dict(snakemake.output.items()),
    reference_metrics=snakemake.input.reference[0] if snakemake.input.reference else None,
)
