"""Rule userstudy_figure: Figures 1-5 from the user-study tables."""

from reallymuted.figures import userstudy as userstudy_figures
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
userstudy_figures.plot_userstudy_figures(dict(snakemake.input.items()), list(snakemake.output))
