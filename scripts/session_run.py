"""Rule session: run one testbed session (needs root) and publish its raw evidence."""

from reallymuted.io import log_to_file
from reallymuted.testbed.supervisor import main_for_snakemake

log_to_file(snakemake.log[0])
main_for_snakemake(snakemake)
