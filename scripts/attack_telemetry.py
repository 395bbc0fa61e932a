"""Rule attack_telemetry: the attack's sessions -> decoded intervals with input dB(A), minutes."""

from reallymuted.analysis import attack_telemetry
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
attack_telemetry.telemetry_to_files(
    [
        {"dir": d, "telemetry": t, "stimulus": w, "spec": snakemake.params.specs[name]}
        for d, t, w, name in zip(
            snakemake.params.dirs,
            snakemake.input.telemetry,
            snakemake.input.stimuli,
            snakemake.params.stimuli,
            strict=True,
        )
    ],
    snakemake.params.classes,
    snakemake.params.windows,
    dict(snakemake.output.items()),
)
