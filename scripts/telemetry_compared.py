"""Rule telemetry_compared: Webex's telemetry while muted from every source present."""

from reallymuted.analysis.telemetry.compared import write_compared
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
inputs = snakemake.input
write_compared(
    inputs.get("reference"), inputs.get("profile"), inputs.get("sdk"), snakemake.output[0]
)
