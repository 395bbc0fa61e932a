"""What the apps' privacy policies say (issue 16; docs/policy.md): the corpus of statements
(:mod:`.corpus`), the rule-based review of a policy text (:mod:`.review`), the optional fetch
of the documents' current texts (:mod:`.fetch`) and the ``reallymuted policy`` commands
(:mod:`.cli`). The comparison with the measurements is :mod:`reallymuted.analysis.policy`."""
