"""Rule policy_behaviour: each app's policy beside what was measured while muted
(results/tables/policy_behaviour.csv, its figure and values/policy.json)."""

from pathlib import Path

from reallymuted.analysis.policy import write_policy_behaviour
from reallymuted.config import load_registry
from reallymuted.figures.policy import plot_policy_behaviour
from reallymuted.io import log_to_file
from reallymuted.policy.corpus import load_corpus

log_to_file(snakemake.log[0])
inputs, out = snakemake.input, snakemake.output
registry = load_registry(inputs.registry, inputs.registry_schema)
corpus = load_corpus(inputs.corpus, inputs.schema, apps=registry)
# the documents' current texts, results/policies/{app}/{document}.txt (policy.fetch on only)
fetched = {(Path(t).parent.name, Path(t).stem): Path(t) for t in inputs.get("fetched", [])}
table = write_policy_behaviour(
    corpus,
    inputs.get("headline"),
    inputs.get("telemetry"),
    dict(out.items()),
    fetched,
)
plot_policy_behaviour(table, [out.png, out.pdf])
