"""Rule session_stimulus: one seeded stimulus WAV (48 kHz mono) for the sessions."""

from reallymuted.io import log_to_file
from reallymuted.testbed.stimuli import make_stimulus

log = log_to_file(snakemake.log[0])
digest = make_stimulus(snakemake.params.spec, snakemake.output[0])
log.info("%s: sha256 %s", snakemake.output[0], digest)
