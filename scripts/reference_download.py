"""Rule reference_download: fetch the pinned commit of the authors' artifact, verified."""

from reallymuted import reference
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
reference.download(
    snakemake.params.reference,
    reference.read_checksums(snakemake.params.checksums),
    snakemake.params.target,
)
