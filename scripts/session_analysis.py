"""Rule session_analysis: per-state statistics, policy labels and flows of one session."""

from pathlib import Path

from reallymuted.analysis import micpolicy
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
micpolicy.write_session_analysis(
    Path(snakemake.input.manifest).parent,
    snakemake.input.packets,
    snakemake.input.reads,
    dict(snakemake.output.items()),
)
