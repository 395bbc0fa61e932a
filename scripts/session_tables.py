"""Rule session_tables: session_states.csv, mic_policy.csv and the testbed's named values."""

from reallymuted import micpolicy
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
micpolicy.write_tables(
    list(snakemake.input.states), list(snakemake.input.policies), dict(snakemake.output.items())
)
