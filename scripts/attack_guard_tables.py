"""Rule attack_guard_tables: the attack with and without the OS-level mute, side by side
(results/tables/attack_guard.csv, its figure and values)."""

from reallymuted.analysis.attack_guard import read_arm, write_attack_guard
from reallymuted.figures.attack_guard import plot_attack_guard
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
inputs, out = snakemake.input, snakemake.output
files = ("telemetry", "minutes", "metrics", "folds")
arms = {guard: read_arm({k: inputs[f"{k}_{guard}"] for k in files}) for guard in ("off", "on")}
# each arm under its app's name (from its evidence; the analysis checks the guard column)
arms = {str(arm["telemetry"].app.iloc[0]): arm for arm in arms.values()}
table = write_attack_guard(
    arms, inputs.leakage, snakemake.params.twins, snakemake.params.settings, dict(out.items())
)
plot_attack_guard(
    table,
    {str(a["telemetry"].guard.iloc[0]): a["telemetry"] for a in arms.values()},
    [out.png, out.pdf],
)
