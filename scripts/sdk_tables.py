"""Rule sdk_tables: sdk_sessions.csv, sdk_telemetry.csv and the sdk values."""

from pathlib import Path

from reallymuted.analysis import sdk
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
inputs = snakemake.input
sdk.write_tables(
    [str(Path(m).parent) for m in inputs.manifests],
    inputs.policy,
    inputs.states,
    dict(snakemake.output.items()),
)
