# Helpers shared by all rules: config checks, wildcard constraints, target lists.
import glob
import re
import sys

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # importable without an install (CI installs it anyway)

from steerlimits.config import ConfigError, check_config, model_specs
from steerlimits.models import AssetError, preflight

try:
    check_config(config)
except ConfigError as err:
    raise WorkflowError(f"invalid config: {err}") from None

RUN = config["run"]
RESULTS = f"results/{RUN}"
FIGURES = f"figures/{RUN}"
LOGS = f"logs/{RUN}"
BENCH = f"benchmarks/{RUN}"
MODELS = list(config["models"])
BEHAVIOURS = config["vectors"]["behaviours"]
DOSE_BEHAVIOURS = config["steering"]["dose_response"]["behaviours"]
DATA_DIR = Path(config.get("data_dir", "data"))
DATA_DIR = DATA_DIR if DATA_DIR.is_absolute() else Path(workflow.basedir) / DATA_DIR
config["data_dir"] = str(DATA_DIR)
DATA_FILES = sorted(glob.glob(str(DATA_DIR / "*.jsonl")))


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    behaviour="|".join(map(re.escape, BEHAVIOURS)),


onstart:
    # Before any job: every model obtainable (packages present, GGUF sha256 right, hub reachable or cached).
    try:
        preflight(list(model_specs(config).values()))
    except AssetError as err:
        raise WorkflowError(str(err)) from None


def model_marker(wildcards):
    return f"models/{wildcards.model}/steerlimits_model.json"


def model_entry(wildcards):
    return config["models"][wildcards.model]


# Paper rule files append their final outputs here and their claims tables to CLAIM_TABLES.
PAPER_TARGETS = []
CLAIM_TABLES = []


def all_targets():
    claims = [f"{RESULTS}/claims.csv"] if CLAIM_TABLES else []
    return PAPER_TARGETS + claims + [
        f"{RESULTS}/scorers/validation.csv",
        f"{RESULTS}/steering/dose_response.csv",
        f"{FIGURES}/dose_response.png",
        f"{FIGURES}/dose_response.pdf",
    ] + expand(f"{RESULTS}/vectors/{{model}}/{{behaviour}}.safetensors", model=MODELS, behaviour=BEHAVIOURS)


def size_priority(base):
    """Job priority on a small machine: ``base`` plus the model's size (n_layers · d_model² / 1e6, what its
    forwards cost), so the longest jobs start first."""
    specs = model_specs(config)

    def priority(wildcards):
        spec = specs[wildcards.model]
        return base + (spec.n_layers or 0) * (spec.d_model or 0) ** 2 / 1e6

    return priority
