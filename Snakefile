# steerlimits: contrastive vectors -> steering -> inversion -> null space -> figures and tables.
# Usage: snakemake --cores all                      (config/default.yaml: three packaged LLMs, offline, CPU)
#        snakemake --cores all --configfile config/smoke.yaml
import os

from snakemake.utils import min_version, validate

min_version("9.0")

# Offline by default: a hub call otherwise hangs ~25 s before failing. Users with the hub set HF_HUB_OFFLINE=0.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", os.environ["HF_HUB_OFFLINE"])


envvars:
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",


# --configfile replaces the default instead of being merged into it (a smoke run must not inherit the real models).
if not config:

    configfile: "config/default.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/vectors.smk"
include: "workflow/rules/scorers.smk"
include: "workflow/rules/steering.smk"
include: "workflow/rules/paperA.smk"
include: "workflow/rules/paperB.smk"
include: "workflow/rules/claims.smk"


rule all:
    input:
        all_targets(),
    default_target: True
