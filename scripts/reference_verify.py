"""Rule reference_verify: check every reference file against the pinned checksums."""

from reallymuted import reference
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
reference.write_verification(snakemake.input.data, snakemake.input.checksums, snakemake.output[0])
