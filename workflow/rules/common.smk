# Helpers shared by all rules: the validated config, stage settings as params, wildcard constraints, targets.
import glob
import re
import sys

sys.path.insert(0, str(Path(workflow.basedir).parent / "src"))  # importable without an install (CI installs it)

from steerlimits.hardware import bf16_warning
from steerlimits.registry import AssetError, preflight
from steerlimits.settings import ConfigError, model_specs, params, validate_config

try:  # schema defaults filled (top level, paperA, paperB), then the registry checks; errors name the key
    config.update(validate_config(config))
except ConfigError as err:
    raise WorkflowError(f"invalid config: {err}") from None

RUN = config["run"]
RESULTS = f"results/{RUN}"
FIGURES = f"figures/{RUN}"
LOGS = f"logs/{RUN}"
BENCH = f"benchmarks/{RUN}"
MODELS = list(config["models"])
SPECS = model_specs(config)
BEHAVIOURS = config["vectors"]["behaviours"]
DOSE_BEHAVIOURS = config["steering"]["dose_response"]["behaviours"]
DATA_DIR = Path(config["data_dir"])  # relative to the repository
DATA_DIR = DATA_DIR if DATA_DIR.is_absolute() else Path(workflow.basedir).parent / DATA_DIR
DATA_FILES = sorted(glob.glob(str(DATA_DIR / "*.jsonl")))
STEP = "../scripts/run_step.py"  # the one adapter: settings from params -> steerlimits.steps.<rule>


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    behaviour="|".join(map(re.escape, BEHAVIOURS)),


onstart:
    # Before any job: every model obtainable (packages present, GGUF sha256 right, hub reachable or cached).
    try:
        preflight(list(SPECS.values()))
    except AssetError as err:
        raise WorkflowError(str(err)) from None
    # bf16 paths on a CPU without bf16 matrix instructions: slower than float32 (a warning, not a switch)
    slow_bf16 = bf16_warning(config)
    if slow_bf16:
        from snakemake.logging import logger

        logger.warning(f"WARNING: {slow_bf16}")


def settings(rule):
    """``params.settings`` of ``rule``: its stage's settings for the job (canonical JSON). Snakemake re-runs
    the job exactly when a setting it reads changes."""

    def of(wildcards):
        return params(config, rule, **dict(wildcards.items()))

    return of


def vector_files(which):
    """The vector files of the behaviours ``which``, for the job's model (a ``{model}`` wildcard left open)."""
    return expand(f"{RESULTS}/vectors/{{{{model}}}}/{{v}}.safetensors", v=sorted(set(which)))


def model_marker(wildcards):
    return f"models/{wildcards.model}/steerlimits_model.json"


# Paper rule files append their final outputs here, their claims tables to CLAIM_TABLES and the benchmark files of
# the jobs behind their claims to CLAIM_BENCHMARKS (the claims table reports their measured runtime).
PAPER_TARGETS = []
CLAIM_TABLES = []
CLAIM_BENCHMARKS = []
ALL_BENCHMARKS = []  # every job's benchmark file (the manifest records each job's runtime)
EXAMPLE_POOLS = []  # scored paper B pools and paper A behaviour tables the example texts are drawn from
EXAMPLE_BEHAVIOUR = []


def bench_files(rule, **wildcards):
    """The benchmark files of ``rule``'s jobs for the given wildcard values (``benchmarks/<run>/<rule>/...``)."""
    pattern = re.sub(r"\{(\w+),[^{}]*\}", r"{\1}", str(getattr(rules, rule).rule.benchmark))  # drop constraints
    return expand(pattern, **wildcards)


def all_targets():
    claims = [f"{RESULTS}/claims.csv", f"{RESULTS}/claims.md", f"{RESULTS}/examples.html"] if CLAIM_TABLES else []
    return (
        PAPER_TARGETS
        + claims
        + [
            f"{RESULTS}/scorers/validation.csv",
            f"{RESULTS}/steering/dose_response.csv",
            f"{FIGURES}/dose_response.png",
            f"{FIGURES}/dose_response.pdf",
        ]
        + expand(f"{RESULTS}/vectors/{{model}}/{{behaviour}}.safetensors", model=MODELS, behaviour=BEHAVIOURS)
    )


def size_priority(base):
    """Job priority on a small machine: ``base`` plus the model's size (n_layers · d_model² / 1e6, what its
    forwards cost), so the longest jobs start first."""

    def priority(wildcards):
        spec = SPECS[wildcards.model]
        return base + (spec.n_layers or 0) * (spec.d_model or 0) ** 2 / 1e6

    return priority
