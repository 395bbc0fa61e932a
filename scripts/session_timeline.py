"""Rule session_timeline: the timeline figure of one session."""

from pathlib import Path

from reallymuted.figures import sessions as session_figures
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
session_figures.timeline_from_files(
    Path(snakemake.input.manifest).parent,
    snakemake.input.packets,
    snakemake.input.reads,
    list(snakemake.output),
)
