"""Rule attack_confusion_figure: held-out confusion matrix of the captured telemetry."""

from reallymuted.figures import attack as attack_figures
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
attack_figures.confusion_figure(
    snakemake.input.metrics,
    snakemake.input.confusion,
    snakemake.params.window,
    snakemake.params.classes,
    snakemake.params.interval_s,
    list(snakemake.output),
)
