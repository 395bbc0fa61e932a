"""Artifact evaluation: pack a finished study into one archive with its provenance, and verify
an archive by rebuilding every table and figure from its raw evidence alone.

Why *replay*: a testbed session is a real-time capture, so running it again gives new evidence,
never the same bytes. Verification therefore takes the archived raw evidence as given
(``sessions.replay: true``: the capture rule is not defined and ``results/raw/`` is a plain
input of extraction) and rebuilds everything derived from it and from the authors' reference
data. The stimuli the sessions played are evidence too: the replay reads the archived WAVs,
never a new build of their specs (:func:`prepare_rebuild`). The rebuild happens in a fresh
directory that holds nothing but that evidence, so Snakemake's modification-time logic never
sees an archived output: however the times of the extracted files and of a fresh checkout
compare, every table and figure is computed again before it is compared with the archived one.

Archive (``reallymuted-artifact-<commit>.tar.gz``), one top directory ``reallymuted-artifact/``:

``MANIFEST.json``
    provenance: when and where it was packed, the git commit (and whether the tree was dirty),
    the effective configuration, tool versions (Python packages, Debian packages, programs),
    the SHA-256 of every code file of the checkout (not packed: the commit names them) and of
    every packed file with its role (``evidence``, ``output``, ``log``, ``reference``,
    ``stimulus``, ``report``, ``config``).
``SHA256SUMS``
    every packed file, for ``sha256sum -c``.
``config.yaml``
    the effective configuration (config files merged, schema defaults filled in).
``results/``
    raw evidence (``results/raw/``), every output of the workflow for this configuration, the
    stimuli, the report; ``logs/`` the jobs' logs.
``reference/``
    only with ``--with-reference``: the authors' released files the run read. They carry no
    license (see ../shared/reference/vcamutebutton-popets22/PROVENANCE.md), so by default an
    archive records their digests only and verification reads them where the study does
    (``reference.dir`` beside the checkout, or the pinned commit downloaded), checked against
    workflow/resources/reference.sha256 either way.

Comparison: every output is compared byte for byte; a PNG that differs in bytes is compared
pixel by pixel (max absolute difference per channel <= ``pixel_tolerance``, 0 by default: our
figures are deterministic, ``reallymuted.figures.save`` fixes their metadata). The report
(``results/report.html``) records run times and is not compared.
"""

from reallymuted.artifact.common import (
    MANIFEST,
    SUMS,
    TOP,
    ArtifactError,
    default_repo,
    snakemake_command,
)
from reallymuted.artifact.compare import Comparison, compare_file, compare_trees
from reallymuted.artifact.pack import code_files, effective_config, pack
from reallymuted.artifact.verify import (
    Verification,
    extract,
    prepare_rebuild,
    stimulus_problems,
    verify,
    versions_report,
)

__all__ = [
    "MANIFEST",
    "SUMS",
    "TOP",
    "ArtifactError",
    "Comparison",
    "Verification",
    "code_files",
    "compare_file",
    "compare_trees",
    "default_repo",
    "effective_config",
    "extract",
    "pack",
    "prepare_rebuild",
    "snakemake_command",
    "stimulus_problems",
    "verify",
    "versions_report",
]
