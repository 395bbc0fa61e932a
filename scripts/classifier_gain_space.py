"""Rule classifier_gain_space: Figure 8, activities in (mean, max, min) gain space."""

from reallymuted.figures import classifier as classifier_figures
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
classifier_figures.plot_gain_space_figure(
    snakemake.input.minutes,
    snakemake.params.classes,
    snakemake.params.splits,
    snakemake.params.seed,
    list(snakemake.output),
)
