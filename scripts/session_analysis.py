"""Rule session_analysis: per-state statistics and policy labels of one session."""

from pathlib import Path

from reallymuted import micpolicy
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
micpolicy.write_session_analysis(
    Path(snakemake.input.manifest).parent,
    snakemake.input.packets,
    snakemake.input.reads,
    snakemake.output.states,
    snakemake.output.policy,
)
