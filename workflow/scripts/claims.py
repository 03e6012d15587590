"""Thin adapter: rule claims -> steerlimits.claims.combine_claims."""
from steerlimits import pipeline
from steerlimits.claims import combine_claims
from steerlimits.provenance import provenance, write_with_sidecar

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0])
table = combine_claims(sm.input.tables)
write_with_sidecar(sm.output.table, lambda tmp: table.to_csv(tmp, index=False),
                   provenance(sm.config, sources=list(sm.input.tables)))
