"""Rule classifier_dataset_sizes: the Table 3 analogue (recordings, minutes, windows)."""

from reallymuted.analysis import classifier_summaries
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
classifier_summaries.dataset_sizes_to_file(
    snakemake.input.minutes,
    snakemake.input.recordings,
    snakemake.params.windows,
    snakemake.params.classes,
    snakemake.output[0],
)
