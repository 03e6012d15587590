# Front end for the two README commands; the plain commands underneath are documented in README.md.
SHELL := /bin/bash
VENV := .venv/bin
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: setup reproduce smoke test lint bench clean-smoke

setup:
	bash scripts/setup.sh

reproduce: setup
	$(VENV)/snakemake --cores all --configfile config/default.yaml

smoke: setup
	rm -rf results/smoke figures/smoke logs/smoke benchmarks/smoke
	$(VENV)/snakemake --cores all --configfile config/smoke.yaml

lint:
	$(VENV)/snakemake --lint --configfile config/default.yaml
	$(VENV)/snakemake -n --quiet rules --configfile config/paper.yaml

test: setup
	$(VENV)/python -m pytest -q
	$(MAKE) smoke
	$(MAKE) lint

bench: setup
	$(VENV)/python bench/bench_generate.py
