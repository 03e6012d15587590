"""The one adapter of every rule: rebuild the rule's typed settings from params and call its step function."""

from steerlimits.steps import run

run(snakemake)  # noqa: F821 - injected by Snakemake
