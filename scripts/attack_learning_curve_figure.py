"""Rule attack_learning_curve_figure: accuracy vs time observed, captured beside reference."""

from reallymuted.figures import attack as attack_figures
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
attack_figures.learning_curve_figure(snakemake.input.curve, list(snakemake.output))
