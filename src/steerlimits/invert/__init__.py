"""Prompt inversion for paper A: exact, certified sequential search, the one bf16-screened certifier
(:mod:`~steerlimits.invert.screen`), a GCG-style search, and the authors' full-pass sweep as the test oracle
(decisions D3/D5).

Sites: ``measure_at = m`` is a ``hidden_states`` index (output of block ``m - 1``); steering for targets is
added at the input of block ``l = m - 1`` by default (D2). Float32 throughout unless bf16 screening is
requested.
"""

from __future__ import annotations

from steerlimits.invert._forward import PrefixKV, TruncatedLM, embedding_matrix
from steerlimits.invert.gcg import GCGConfig, GCGResult, allowed_tokens, gcg, gcg_search, roundtrip_filter
from steerlimits.invert.reference import reference_sweep
from steerlimits.invert.screen import (
    Certificate,
    CertItem,
    Prefixes,
    Sweep,
    bf16_copy,
    certify,
    screened_sweep,
    sweep_distances,
)
from steerlimits.invert.sequential import (
    InversionConfig,
    InversionResult,
    PositionResult,
    RankFn,
    exhaustive_sweep,
    gradient_order,
    invert,
    noise_floor,
    target_states,
)

__all__ = [
    "CertItem",
    "Certificate",
    "GCGConfig",
    "GCGResult",
    "InversionConfig",
    "InversionResult",
    "PositionResult",
    "PrefixKV",
    "Prefixes",
    "RankFn",
    "Sweep",
    "TruncatedLM",
    "allowed_tokens",
    "bf16_copy",
    "certify",
    "embedding_matrix",
    "exhaustive_sweep",
    "gcg",
    "gcg_search",
    "gradient_order",
    "invert",
    "noise_floor",
    "reference_sweep",
    "roundtrip_filter",
    "screened_sweep",
    "sweep_distances",
    "target_states",
]
