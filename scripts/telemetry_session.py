"""Rule telemetry_session: one profile session's telemetry, capture matched to collector."""

from pathlib import Path

from reallymuted.analysis.telemetry import sessions as telemetry_sessions
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
telemetry_sessions.write_session(
    Path(snakemake.input.manifest).parent,
    snakemake.input.packets,
    snakemake.output.table,
    snakemake.output.check,
)
