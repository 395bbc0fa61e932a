"""Rule apps_platforms: the Table 2 analogue (apps x platforms) from the registry."""

from reallymuted.analysis import apps
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
apps.write_platforms(snakemake.input.registry, snakemake.output[0])
