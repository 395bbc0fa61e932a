"""Rule classifier_tables: per-window results -> metrics, confusion, grid tables and values."""

from reallymuted.analysis import classifier_summaries
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
classifier_summaries.tables_to_files(
    list(snakemake.input.metrics),
    list(snakemake.input.confusion),
    list(snakemake.input.grid),
    snakemake.input.recordings,
    dict(snakemake.output.items()),
)
