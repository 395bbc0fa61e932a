"""Rule attack_fig7: decoded mean and min gain against the input level in dB(A)."""

from reallymuted.figures import attack as attack_figures
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
attack_figures.gain_vs_power_figure(
    snakemake.input.table, snakemake.input.values, list(snakemake.output)
)
