"""Rule apps_headline: per app, the paper's finding beside each source of evidence."""

from reallymuted.analysis import apps
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
inputs = snakemake.input
apps.write_headline(
    inputs.registry,
    inputs.policy,
    inputs.states,
    inputs.flows,
    inputs.checks[0] if inputs.checks else None,
    snakemake.output.table,
    [snakemake.output.png, snakemake.output.pdf],
)
