"""Rule classifier_parse: the authors' gains files -> per-minute and per-recording tables."""

from reallymuted.analysis import classifier
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
classifier.parse_to_files(
    {split: list(snakemake.input[split]) for split in snakemake.params.splits},
    snakemake.params.classes,
    dict(snakemake.output.items()),
)
