"""Rule extract_session: packets.parquet and mic_reads.parquet of one session."""

from pathlib import Path

from reallymuted.analysis import extract
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
extract.extract_session(
    Path(snakemake.input.manifest).parent, snakemake.output.packets, snakemake.output.reads
)
