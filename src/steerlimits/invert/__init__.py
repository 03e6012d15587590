"""Prompt inversion for paper A: exact, certified sequential search, a GCG-style search, and the authors'
full-pass sweep as the test oracle (decisions D3/D5).

Sites: ``measure_at = m`` is a ``hidden_states`` index (output of block ``m - 1``); steering for targets is
added at the input of block ``l = m - 1`` by default (D2). Float32 throughout unless bf16 screening is
requested.
"""

from __future__ import annotations

from steerlimits.invert._forward import PrefixKV, TruncatedLM, embedding_matrix
from steerlimits.invert.gcg import GCGResult, gcg_search
from steerlimits.invert.reference import reference_sweep
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
    "GCGResult",
    "InversionConfig",
    "InversionResult",
    "PositionResult",
    "PrefixKV",
    "RankFn",
    "TruncatedLM",
    "embedding_matrix",
    "exhaustive_sweep",
    "gcg_search",
    "gradient_order",
    "invert",
    "noise_floor",
    "reference_sweep",
    "target_states",
]
