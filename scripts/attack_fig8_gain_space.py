"""Rule attack_fig8: the activities in (mean, max, min) gain space, captured telemetry."""

from reallymuted.figures import attack as attack_figures
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
attack_figures.gain_space_figure(
    snakemake.input.minutes,
    snakemake.params.classes,
    snakemake.params.interval_s,
    snakemake.params.seed,
    list(snakemake.output),
)
