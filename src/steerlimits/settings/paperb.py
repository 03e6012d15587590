"""Settings of paper B's stages (``paperB`` block, ``workflow/schemas/paperB.schema.yaml``).

Per model the extraction layer ``l`` (the global steering layer), the injection layer (``l``, or ``l + 1`` with
``paperB.offset``, as the authors' code effectively does), the prompt format and the positions are resolved once,
here (:class:`PaperBContext`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from steerlimits.registry import ModelSpec
from steerlimits.settings.base import from_params
from steerlimits.settings.config import model_specs
from steerlimits.settings.core import Positions, layer_of, scorer_of

__all__ = [
    "E1",
    "E2",
    "E3",
    "E4",
    "E5",
    "E6",
    "E7",
    "Decoding",
    "PaperBClaims",
    "PaperBContext",
    "PaperBFigures",
    "PaperBGenerate",
    "PaperBLogits",
    "PaperBNullspace",
    "PaperBScore",
    "PaperBTables",
]

T = TypeVar("T")
Family = Literal["random_orth", "null_cov", "null_jac", "active"]


@dataclass(frozen=True)
class PaperBContext:
    model: ModelSpec
    layer: int  # extraction: the vector's row, residual at the input of block `layer`
    inject_layer: int  # steering at the input of this block (layer, or layer + 1 with paperB.offset)
    prompt_format: Literal["chat", "raw"]
    positions: Positions
    method: str
    seed: int
    data_dir: str


@dataclass(frozen=True)
class Thresholds:
    covariance: float
    jacobian: float


@dataclass(frozen=True)
class Decoding:
    mode: Literal["explicit", "faithful"]
    temperature: float
    top_p: float
    batch_size: int


@dataclass(frozen=True)
class E1:
    n_stems: int
    n_seeds: int
    samples_per_seed: int
    samples_v: int
    samples_u: int
    samples_neg: int


@dataclass(frozen=True)
class E2:
    alphas: tuple[float, ...]
    samples_v: int
    n_seeds: int
    samples_per_seed: int
    family: Family


@dataclass(frozen=True)
class E3:
    n_prompts: int
    samples: int
    n_seeds: int
    max_new_tokens: int
    family: Family


@dataclass(frozen=True)
class E4:
    n_prefixes: int
    n_u: int
    n_r: int


@dataclass(frozen=True)
class E5:
    n_prompts: int
    samples: int


@dataclass(frozen=True)
class E6:
    families: tuple[Family, ...]
    n_directions: int
    samples: int
    families_b: tuple[Family, ...]
    ks: tuple[int, ...]
    n_draws: int
    samples_per_draw: int


@dataclass(frozen=True)
class E7:
    cov_min_tokens: int
    cov_corpora: bool
    cov_corpora_max: int
    cov_thresholds: tuple[float, ...]
    jac_prompts: int
    jac_prompts_other: int
    jac_thresholds: tuple[float, ...]
    jac_chunk: int | None


@dataclass(frozen=True)
class PaperBNullspace:
    ctx: PaperBContext
    e7: E7
    null_thresholds: Thresholds


@dataclass(frozen=True)
class PaperBGenerate:
    ctx: PaperBContext
    trait: str
    alpha: float
    max_new_tokens: int
    families: tuple[Family, ...]
    decoding: Decoding
    e1: E1
    e2: E2
    e3: E3
    e5: E5
    e6: E6


@dataclass(frozen=True)
class PaperBScore:
    scorers: dict[str, str]  # trait -> scorer name


@dataclass(frozen=True)
class PaperBLogits:
    ctx: PaperBContext
    traits: tuple[str, ...]
    alpha: float
    families: tuple[Family, ...]
    e4: E4


@dataclass(frozen=True)
class PaperBTables:
    seed: int
    n_boot: int
    bound_d: float
    alpha: float
    e2: E2


@dataclass(frozen=True)
class PaperBClaims:
    seed: int
    half_layers: dict[str, int]  # model -> L // 2 (B10 is stated there)


@dataclass(frozen=True)
class PaperBFigures:
    cov_thresholds: tuple[float, ...]
    jac_thresholds: tuple[float, ...]


# ------------------------------------------------------------------------------------------------- resolvers
def _block(cls: type[T], block: Mapping[str, Any], drop: tuple[str, ...] = ()) -> T:
    return from_params(cls, {k: v for k, v in block.items() if k not in drop})


def _ctx(config: Mapping[str, Any], model: str) -> PaperBContext:
    pb = config["paperB"]
    spec = model_specs(config)[model]
    layer = layer_of(config, model)
    fmt: Literal["chat", "raw"] = "chat" if pb["format"] == "chat" and spec.chat_template else "raw"
    return PaperBContext(spec, layer, layer + 1 if pb["offset"] else layer, fmt, pb["positions"], pb["method"],
                         config["seed"], config["data_dir"])


def paperB_models(config: Mapping[str, Any]) -> list[str]:
    return list(config["paperB"]["models"] or config["models"])


def paperB_nullspace(config: Mapping[str, Any], model: str) -> PaperBNullspace:
    pb = config["paperB"]
    return PaperBNullspace(_ctx(config, model), _block(E7, pb["e7"]), _block(Thresholds, pb["null_thresholds"]))


def paperB_generate(config: Mapping[str, Any], model: str, trait: str) -> PaperBGenerate:
    pb = config["paperB"]
    decoding = from_params(Decoding, {"mode": pb["decoding"], "temperature": pb["temperature"],
                                      "top_p": pb["top_p"], "batch_size": pb["batch_size"]})
    return PaperBGenerate(_ctx(config, model), trait, float(pb["alpha"]), pb["max_new_tokens"],
                          tuple(pb["families"]), decoding, _block(E1, pb["e1"]), _block(E2, pb["e2"]),
                          _block(E3, pb["e3"]), _block(E5, pb["e5"]), _block(E6, pb["e6"]))


def paperB_score(config: Mapping[str, Any]) -> PaperBScore:
    return PaperBScore({t: scorer_of(config, t) for t in config["paperB"]["traits"]})


def paperB_logits(config: Mapping[str, Any], model: str) -> PaperBLogits:
    pb = config["paperB"]
    return PaperBLogits(_ctx(config, model), tuple(pb["traits"]), float(pb["alpha"]), tuple(pb["families"]),
                        _block(E4, pb["e4"]))


def paperB_tables(config: Mapping[str, Any]) -> PaperBTables:
    pb = config["paperB"]
    return PaperBTables(config["seed"], pb["n_boot"], float(pb["bound_d"]), float(pb["alpha"]),
                        _block(E2, pb["e2"]))


def paperB_claims(config: Mapping[str, Any]) -> PaperBClaims:
    specs = model_specs(config)
    return PaperBClaims(config["seed"], {m: int(specs[m].n_layers or 0) // 2 for m in paperB_models(config)})


def paperB_figures(config: Mapping[str, Any]) -> PaperBFigures:
    e7 = config["paperB"]["e7"]
    return PaperBFigures(tuple(float(t) for t in e7["cov_thresholds"]), tuple(float(t) for t in e7["jac_thresholds"]))
