"""Rule telemetry_reference: the authors' decoded Webex record → table, problems, T1 values."""

from reallymuted.analysis import telemetry
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
telemetry.decode_reference(
    snakemake.input.dump, dict(snakemake.output.items()), name=snakemake.params.name
)
