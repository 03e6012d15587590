"""Settings of paper A's stages (``paperA`` block, ``workflow/schemas/paperA.schema.yaml``).

Per model and vector the layer (``paperA.layers`` override, else the global steering layer), the coefficient
(``paperA.alpha_overrides``, else ``paperA.alpha``) and the prompt format are resolved once, here
(:class:`VectorSite`). Each stage carries only the blocks it reads, so that editing, say, ``paperA.e5`` re-runs E5
and what depends on it, nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from steerlimits.registry import ModelSource
from steerlimits.settings.base import from_params
from steerlimits.settings.config import model_specs
from steerlimits.settings.core import Device, PromptFormat, layer_of, prompt_format_of, scorer_of

__all__ = [
    "SPEC_DEFAULT",
    "Decoder",
    "E1",
    "E2",
    "E3",
    "E4",
    "E5",
    "E6",
    "E7",
    "PaperAClaims",
    "PaperAContext",
    "PaperAE3",
    "PaperAE4",
    "PaperAE5",
    "PaperAE6",
    "PaperAE7",
    "PaperAFigures",
    "PaperAInversion",
    "PaperAResponses",
    "PaperATables",
    "VectorSite",
]

T = TypeVar("T")


@dataclass(frozen=True)
class VectorSite:
    """Vector ``v`` steered at the input of block ``layer`` at every position; measured at ``layer + 1``."""

    layer: int
    alpha: float
    prompt_format: PromptFormat


@dataclass(frozen=True)
class PaperAContext:
    """One model's paper-A setting: which vectors this stage loads, where they act, and the master seed."""

    model: ModelSource
    method: str
    sites: dict[str, VectorSite]
    seed: int
    data_dir: str
    refusal_trained: bool
    device: Device  # auto / cpu / cuda: where the model runs (docs/howto/run-on-a-gpu.md)


@dataclass(frozen=True)
class Decoder:
    max_pairs: int
    extra_texts: bool
    extra_traits: tuple[str, ...]
    random_tokens: int
    ridge: float
    vectors: tuple[str, ...]  # contrast pairs of these vectors train the decoder


@dataclass(frozen=True)
class E1:
    n_candidates: int
    batch_size: int
    top_k: int
    screen_safety: float
    screen_swap: bool
    gradient_ranking: bool
    certify: int | Literal["all"]  # this model's value of paperA.e1.certify (else certify_default)
    certify_prompts: int
    screen_dtype: Literal["bfloat16", "float32"]
    cross_check: int  # this model's value of paperA.e1.cross_check (else cross_check_default)
    cold_prompts: int


@dataclass(frozen=True)
class E2:
    coefficients: tuple[float, ...]
    n_prompts: int
    n_candidates: int
    gradient_ranking: bool


@dataclass(frozen=True)
class E3:
    n_prompts: int
    y_tokens: int
    shots: tuple[int, ...]
    demo_tokens: int
    pool: int
    batch_size: int
    demo_dtype: Literal["float32", "bfloat16"]  # the demonstrations' writer; every measurement stays float32
    neutral: bool  # neutral demonstrations of the same lengths (control of A8)
    min_demo_distinct: float  # below this median distinct-token fraction the ablated demonstrations are degenerate


@dataclass(frozen=True)
class E4:
    n_prompts: int
    y_tokens: int
    n_virtual: int
    tuning_steps: int
    lr: float
    lr_units: Literal["embedding_std", "absolute"]
    gcg_steps: int
    gcg_width: int
    gcg_topk: int
    gcg_n_replace: int
    gcg_buffer: int
    gcg_screen: Literal["float32", "bfloat16"]
    gcg_verify: int
    tuning_loss: Literal["activation", "cross_entropy"]
    control_k: int
    modes: tuple[Literal["replacement", "prefix"], ...]


@dataclass(frozen=True)
class E5:
    n_prompts: int
    p_values: tuple[int, ...]
    steps: int
    lr: float
    lr_units: Literal["embedding_std", "absolute"]
    init_scale: float
    warm_start: bool


@dataclass(frozen=True)
class E6:
    n_prompts: int
    y_tokens: int
    icl_n: tuple[int, ...]


@dataclass(frozen=True)
class E7:
    paraphrases: bool


@dataclass(frozen=True)
class PaperAInversion:
    ctx: PaperAContext
    n_prompts: int
    decoder: Decoder
    e1: E1
    e2: E2
    reductions: tuple[str, ...]


@dataclass(frozen=True)
class PaperABehaviour:
    ctx: PaperAContext
    max_new_tokens: int
    scorers: dict[str, str]  # vector -> scorer name


@dataclass(frozen=True)
class PaperAResponses:
    ctx: PaperAContext
    n_prompts: int  # the largest of E3, E4, E6
    y_tokens: int


@dataclass(frozen=True)
class PaperAE3:
    ctx: PaperAContext
    e3: E3
    reductions: tuple[str, ...]


@dataclass(frozen=True)
class PaperAE4:
    ctx: PaperAContext
    e4: E4
    reductions: tuple[str, ...]


@dataclass(frozen=True)
class PaperAE5:
    ctx: PaperAContext
    e5: E5
    max_new_tokens: int
    reductions: tuple[str, ...]


@dataclass(frozen=True)
class PaperAE6:
    ctx: PaperAContext
    e6: E6
    reductions: tuple[str, ...]


@dataclass(frozen=True)
class PaperAE7:
    ctx: PaperAContext
    e7: E7


@dataclass(frozen=True)
class PaperATables:
    reductions: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class PaperAFigures:
    seed: int


@dataclass(frozen=True)
class PaperAClaims:
    """Thresholds are fixed in :mod:`steerlimits.papera.claims`; reads no setting."""


#: The papers' "Default" sizes (per model), for recording every reduction of a run's sizes against them.
SPEC_DEFAULT: dict[str, dict[str, int]] = {
    "e1": {"n_candidates": 128},
    "e2": {"n_prompts": 3, "n_candidates": 64},
    "e3": {"n_prompts": 3, "y_tokens": 32, "demo_tokens": 48},
    "e4": {"n_prompts": 2, "tuning_steps": 50, "gcg_steps": 20, "gcg_width": 64, "y_tokens": 32},
    "e5": {"n_prompts": 1, "steps": 40, "p_values": 6},
    "e6": {"n_prompts": 3, "y_tokens": 32},
}  # e5.p_values: issue 10 set the default column to p in {1, 2, 4, 8, 16, 25}, warm-started


def reductions(pa: Mapping[str, Any], section: str) -> tuple[str, ...]:
    """This run's sizes below the default column (human-readable), recorded in the outputs."""
    out = []
    for key, spec in SPEC_DEFAULT.get(section, {}).items():
        value = pa[section][key]
        value = len(value) if isinstance(value, list) else value
        if value < spec:
            out.append(f"{section}.{key} = {value} (default column {spec})")
    if section == "e1" and pa["n_prompts"] < 10:
        out.append(f"n_prompts = {pa['n_prompts']} (default column 10)")
    return tuple(out)


# ------------------------------------------------------------------------------------------------- resolvers
def _ctx(config: Mapping[str, Any], model: str, vectors: list[str]) -> PaperAContext:
    pa = config["paperA"]
    spec = model_specs(config)[model]
    sites = {}
    for v in sorted(set(vectors)):
        layer = pa["layers"].get(model, {}).get(v)
        alpha = pa["alpha_overrides"].get(model, {}).get(v, pa["alpha"][v])
        sites[v] = VectorSite(
            layer_of(config, model) if layer is None else int(layer), float(alpha), prompt_format_of(config, v, spec)
        )
    return PaperAContext(
        ModelSource.of(spec),
        pa["method"],
        sites,
        config["seed"],
        config["data_dir"],
        spec.refusal_trained,
        config["device"],
    )


def _block(cls: type[T], block: Mapping[str, Any], drop: tuple[str, ...] = (), **extra: Any) -> T:
    """``cls`` from a config block (typed and checked by :func:`from_params`): every key of the block is a field
    unless it is resolved into another one (``drop``)."""
    return from_params(cls, {**{k: v for k, v in block.items() if k not in drop}, **extra})


def paperA_inversion(config: Mapping[str, Any], model: str) -> PaperAInversion:
    pa = config["paperA"]
    certify = pa["e1"]["certify"].get(model, pa["e1"]["certify_default"])
    cross = pa["e1"]["cross_check"].get(model, pa["e1"]["cross_check_default"])
    return PaperAInversion(
        _ctx(config, model, pa["vectors"]),
        pa["n_prompts"],
        _block(Decoder, pa["decoder"], vectors=pa["vectors"]),
        _block(
            E1,
            pa["e1"],
            drop=("certify", "certify_default", "cross_check", "cross_check_default"),
            certify=certify,
            cross_check=cross,
        ),
        _block(E2, pa["e2"]),
        reductions(pa, "e1") + reductions(pa, "e2"),
    )


def paperA_behaviour(config: Mapping[str, Any], model: str) -> PaperABehaviour:
    pa = config["paperA"]
    return PaperABehaviour(
        _ctx(config, model, pa["vectors"]), pa["max_new_tokens"], {v: scorer_of(config, v) for v in pa["vectors"]}
    )


def paperA_responses(config: Mapping[str, Any], model: str) -> PaperAResponses:
    pa = config["paperA"]
    return PaperAResponses(
        _ctx(config, model, pa["responses"]["vectors"]),
        max(pa[e]["n_prompts"] for e in ("e3", "e4", "e6")),
        max(pa[e]["y_tokens"] for e in ("e3", "e4", "e6")),
    )


def paperA_e3(config: Mapping[str, Any], model: str) -> PaperAE3:
    pa = config["paperA"]
    return PaperAE3(_ctx(config, model, pa["responses"]["vectors"]), _block(E3, pa["e3"]), reductions(pa, "e3"))


def paperA_e4(config: Mapping[str, Any], model: str) -> PaperAE4:
    pa = config["paperA"]
    return PaperAE4(_ctx(config, model, pa["responses"]["vectors"]), _block(E4, pa["e4"]), reductions(pa, "e4"))


def paperA_e5(config: Mapping[str, Any], model: str) -> PaperAE5:
    pa = config["paperA"]
    return PaperAE5(
        _ctx(config, model, pa["responses"]["vectors"]),
        _block(E5, pa["e5"]),
        pa["max_new_tokens"],
        reductions(pa, "e5"),
    )


def paperA_e6(config: Mapping[str, Any], model: str) -> PaperAE6:
    pa = config["paperA"]
    return PaperAE6(_ctx(config, model, pa["responses"]["vectors"]), _block(E6, pa["e6"]), reductions(pa, "e6"))


def paperA_e7(config: Mapping[str, Any], model: str) -> PaperAE7:
    pa = config["paperA"]
    return PaperAE7(_ctx(config, model, pa["e7"]["vectors"]), _block(E7, pa["e7"], drop=("vectors",)))


def paperA_tables(config: Mapping[str, Any]) -> PaperATables:
    pa = config["paperA"]
    return PaperATables({s: reductions(pa, s) for s in SPEC_DEFAULT})


def paperA_figures(config: Mapping[str, Any]) -> PaperAFigures:
    return PaperAFigures(config["seed"])


def paperA_claims(config: Mapping[str, Any]) -> PaperAClaims:
    return PaperAClaims()
