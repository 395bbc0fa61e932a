"""Rule telemetry_sessions_tables: the profiles' telemetry tables and named values."""

from reallymuted.analysis.telemetry import sessions as telemetry_sessions
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
telemetry_sessions.write_study(
    list(snakemake.input.tables), list(snakemake.input.checks), dict(snakemake.output.items())
)
