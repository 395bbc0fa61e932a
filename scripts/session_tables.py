"""Rule session_tables: session_states.csv, mic_policy.csv, session_flows.csv, named values."""

from reallymuted.analysis import micpolicy
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
inputs = snakemake.input
micpolicy.write_tables(
    list(inputs.states), list(inputs.policies), list(inputs.flows), dict(snakemake.output.items())
)
