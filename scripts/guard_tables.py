"""Rule guard_tables: each guarded client beside its twin (results/tables/guard.csv, the
guard figure and values)."""

from reallymuted.analysis.guard import write_guard_tables
from reallymuted.figures.guard import plot_guard
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
out = snakemake.output
table = write_guard_tables(snakemake.input.states, snakemake.params.twins, dict(out.items()))
plot_guard(table, [out.png, out.pdf])
