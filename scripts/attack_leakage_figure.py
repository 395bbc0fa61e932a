"""Rule attack_leakage_figure: accuracy against chance, per app and mute mode."""

import pandas as pd

from reallymuted.figures.attack import plot_leakage
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
plot_leakage(pd.read_csv(snakemake.input.table), list(snakemake.output))
