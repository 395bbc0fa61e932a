"""Rule userstudy_figure: one of Figures 1-5 from the user-study tables."""

from reallymuted import figures
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
figures.plot_userstudy_figure(
    snakemake.wildcards.figure, dict(snakemake.input.items()), list(snakemake.output)
)
