"""Rule reference_download: fetch the pinned commit of the authors' artifact, verified."""

import sys

from reallymuted import reference
from reallymuted.io import DataError, log_to_file

log_to_file(snakemake.log[0])
try:
    reference.download(
        snakemake.params.reference,
        reference.read_checksums(snakemake.params.checksums),
        snakemake.params.target,
    )
except DataError as exc:
    # log_to_file sent stderr to the rule's log; say why on the terminal too, next to
    # Snakemake's "Error in rule reference_download", which only points at the log
    print(f"reference_download: {exc}", file=sys.__stderr__)
    raise
