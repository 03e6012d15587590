# steerlimits: the workflow lives in workflow/Snakefile (Snakemake workflow-catalog layout); this shim lets
# `snakemake --cores all` run from the repository root. An included file does not set the default target, so the
# shim names it: rule `all` of workflow/Snakefile.
include: "workflow/Snakefile"


workflow.default_target = "all"
