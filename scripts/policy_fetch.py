"""Rule policy_fetch (policy.fetch on; needs internet): one document of the policy corpus as
served today, its text and a record of when and what was fetched (results/policies/)."""

import logging

from reallymuted.io import log_to_file
from reallymuted.policy.corpus import load_corpus
from reallymuted.policy.fetch import fetch_document

log_to_file(snakemake.log[0])
app, doc_id = snakemake.wildcards.app, snakemake.wildcards.document
document = load_corpus(snakemake.input.corpus, snakemake.input.schema).document(app, doc_id)
record = fetch_document(
    document.url,
    {"raw": snakemake.output.raw, "text": snakemake.output.text, "record": snakemake.output.record},
    {"app": app, "document": doc_id, "title": document.title, "corpus_quotes": document.version},
)
logging.info("%s/%s: %s bytes, sha256 %s, text %s", app, doc_id, record["bytes"],
             record["sha256"], record["text_from"])  # fmt: skip
