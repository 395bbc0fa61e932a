"""Rule claims: the paper's claims beside the computed values, with verdicts."""

from reallymuted import claims
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
out = snakemake.output
claims.write_claims(
    snakemake.input.claims,
    list(snakemake.input["values"]),
    out.csv,
    out.md,
    dict(snakemake.params.absent),
)
