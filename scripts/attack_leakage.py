"""Rule attack_leakage: muted traffic windows of the attack's sessions -> leakage per app/mode."""

from reallymuted.analysis import leakage
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
leakage.leakage_to_files(
    list(snakemake.params.dirs),
    list(snakemake.input.packets),
    list(snakemake.params.stimuli),
    snakemake.params.window_s,
    snakemake.params.seed,
    snakemake.params.bootstrap,
    snakemake.params.permutations,
    dict(snakemake.output.items()),
)
