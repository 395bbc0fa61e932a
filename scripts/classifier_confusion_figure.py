"""Rule classifier_confusion_figure: one of Figures 9, 12, 13, 14 (confusion matrices)."""

from reallymuted.figures import classifier as classifier_figures
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
classifier_figures.plot_confusion_figure(
    int(snakemake.wildcards.window),
    dict(snakemake.input.items()),
    snakemake.params.classes,
    snakemake.params.splits,
    list(snakemake.output),
)
