"""Rule userstudy_tables: counts, kappa and IUIPC-8 from the released survey."""

from reallymuted.analysis import userstudy
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
tables = userstudy.analyse(
    snakemake.input.survey,
    {q: snakemake.input[f"kappa_{q.lower()}"] for q in userstudy.KAPPA_FILES},
)
userstudy.write_outputs(tables, dict(snakemake.output.items()))
