"""Settings of paper B's stages (``paperB`` block, ``workflow/schemas/paperB.schema.yaml``).

Per model the extraction layer ``l`` (the global steering layer), the injection layer (``l``, or ``l + 1`` with
``paperB.offset``, as the authors' code effectively does), the prompt format and the positions are resolved once,
here (:class:`PaperBContext`). Each stage's dataclass holds exactly what its step reads, so an edit re-runs exactly
the jobs that read it. The calibrated coefficient α and the per-pair sample size are *outputs* of
``paperB_calibrate`` (read by the downstream steps from that file, so a new calibration re-runs them), not settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from steerlimits.registry import ModelSpec
from steerlimits.settings.base import from_params
from steerlimits.settings.config import model_specs
from steerlimits.settings.core import Device, Positions, layer_of, scorer_of

__all__ = [
    "E1",
    "E2",
    "E3",
    "E4",
    "E6",
    "E7",
    "Calibration",
    "Decoding",
    "Design",
    "PaperBCalibrate",
    "PaperBClaims",
    "PaperBContext",
    "PaperBDtypeCheck",
    "PaperBFigures",
    "PaperBGenerate",
    "PaperBLogits",
    "PaperBNullspace",
    "PaperBScore",
    "PaperBTables",
    "paperB_scorer",
]

T = TypeVar("T")
Family = Literal["random_orth", "null_cov", "null_jac", "active"]
Dtype = Literal["float32", "bfloat16"]


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
    device: Device  # auto / cpu / cuda: where the model runs (docs/howto/run-on-a-gpu.md)


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
    max_new_tokens: int = 16
    dtype: Dtype = "float32"


@dataclass(frozen=True)
class Calibration:
    n_stems: int  # the last n_stems neutral stems; every other stem is an evaluation stem
    samples: int
    methods: tuple[str, ...]
    rel_norms: tuple[float, ...]
    target_d: float
    max_ppl_ratio: float


@dataclass(frozen=True)
class Design:
    delta: float
    power: float
    tost_alpha: float
    s_min: int
    s_max: int
    s_failed: int


@dataclass(frozen=True)
class E1:
    n_stems: int | None
    samples_u: int
    samples_neg: int


@dataclass(frozen=True)
class E2:
    alphas: tuple[float, ...]  # multiples of the calibrated alpha
    samples: int
    family: Family


@dataclass(frozen=True)
class E3:
    n_prompts: int
    samples: int
    max_new_tokens: int
    family: Family


@dataclass(frozen=True)
class E4:
    n_prefixes: int
    n_u: int
    n_r: int
    n_random: int  # norm-matched random directions for "where v lives" (B11)


@dataclass(frozen=True)
class E6:
    families: tuple[Family, ...]
    n_directions: int
    samples: int
    families_b: tuple[Family, ...]
    ks: tuple[int, ...]
    n_draws: int
    n_stems_b: int


@dataclass(frozen=True)
class E7:
    cov_min_tokens: int
    cov_corpora: bool
    cov_corpora_max: int
    cov_thresholds: tuple[float, ...]
    outlier_factor: float
    jac_prompts: int
    jac_prompts_other: int
    jac_thresholds: tuple[float, ...]
    jac_chunk: int | None
    fisher_mass: float


@dataclass(frozen=True)
class PaperBNullspace:
    ctx: PaperBContext
    e7: E7
    null_thresholds: Thresholds
    active_k: int


@dataclass(frozen=True)
class PaperBCalibrate:
    ctx: PaperBContext
    trait: str
    scorer: str
    alpha: float  # the paper's fixed coefficient (always in the sweep; used downstream with alpha_mode fixed)
    alpha_mode: Literal["calibrated", "fixed"]
    decoding: Decoding
    calibration: Calibration
    design: Design
    n_eval_stems: int | None  # E1's stems (None: every evaluation stem): the n of the power calculation


@dataclass(frozen=True)
class PaperBGenerate:
    ctx: PaperBContext
    trait: str
    calibration_stems: int
    families: tuple[Family, ...]
    decoding: Decoding
    e1: E1
    e2: E2
    e3: E3
    e6: E6


@dataclass(frozen=True)
class PaperBDtypeCheck:
    ctx: PaperBContext
    trait: str
    scorer: str
    calibration_stems: int
    decoding: Decoding
    samples: int
    n_stems: int | None
    delta: float


@dataclass(frozen=True)
class PaperBScore:
    scorers: dict[str, str]  # trait -> scorer name (continuous sentiment unless paperB.sentiment_score says not)


@dataclass(frozen=True)
class PaperBLogits:
    ctx: PaperBContext
    traits: tuple[str, ...]
    calibration_stems: int
    families: tuple[Family, ...]
    e4: E4
    jac_prompts: int
    jac_chunk: int | None
    jac_thresholds: tuple[float, ...]
    fisher_mass: float


@dataclass(frozen=True)
class PaperBTables:
    seed: int
    n_boot: int
    bound_d: float
    delta: float
    tost_alpha: float
    e2_alphas: tuple[float, ...]


@dataclass(frozen=True)
class PaperBClaims:
    seed: int
    half_layers: dict[str, int]  # model -> L // 2 (B10 is stated there)
    delta: float
    tost_alpha: float
    target_d: float
    max_ppl_ratio: float
    null_thresholds: Thresholds


@dataclass(frozen=True)
class PaperBFigures:
    cov_thresholds: tuple[float, ...]
    jac_thresholds: tuple[float, ...]
    delta: float
    target_d: float
    max_ppl_ratio: float


# ------------------------------------------------------------------------------------------------- resolvers
def _block(cls: type[T], block: Mapping[str, Any], drop: tuple[str, ...] = ()) -> T:
    return from_params(cls, {k: v for k, v in block.items() if k not in drop})


def _ctx(config: Mapping[str, Any], model: str) -> PaperBContext:
    pb = config["paperB"]
    spec = model_specs(config)[model]
    layer = layer_of(config, model)
    fmt: Literal["chat", "raw"] = "chat" if pb["format"] == "chat" and spec.chat_template else "raw"
    return PaperBContext(
        spec,
        layer,
        layer + 1 if pb["offset"] else layer,
        fmt,
        pb["positions"],
        pb["method"],
        config["seed"],
        config["data_dir"],
        config["device"],
    )


def _decoding(pb: Mapping[str, Any]) -> Decoding:
    return from_params(
        Decoding,
        {
            "mode": pb["decoding"],
            "temperature": pb["temperature"],
            "top_p": pb["top_p"],
            "batch_size": pb["batch_size"],
            "max_new_tokens": pb["max_new_tokens"],
            "dtype": pb["dtype"],
        },
    )


def paperB_scorer(config: Mapping[str, Any], trait: str) -> str:
    """The scorer of ``trait`` in paper B: the trait's scorer, in its continuous form (P(positive) −
    P(negative) for sentiment) unless ``paperB.sentiment_score`` is ``signed_argmax`` (the papers' reading)."""
    from steerlimits.scoring import continuous_variant

    name = scorer_of(config, trait)
    return continuous_variant(name) if config["paperB"]["sentiment_score"] == "prob_diff" else name


def paperB_models(config: Mapping[str, Any]) -> list[str]:
    return list(config["paperB"]["models"] or config["models"])


def _spectrum_thresholds(pb: Mapping[str, Any], kind: str) -> tuple[float, ...]:
    """The thresholds (relative to σ₁) at which the ``kind`` (``cov`` / ``jac``) spectra are summarised:
    ``e7.<kind>_thresholds`` plus the null-space threshold of that estimator (B10 reads the table there)."""
    null = float(pb["null_thresholds"]["covariance" if kind == "cov" else "jacobian"])
    out = [float(t) for t in pb["e7"][f"{kind}_thresholds"]]
    return tuple(out + [null] if not any(abs(t - null) < 1e-12 for t in out) else out)


def paperB_nullspace(config: Mapping[str, Any], model: str) -> PaperBNullspace:
    pb = config["paperB"]
    e7 = {
        **pb["e7"],
        "cov_thresholds": _spectrum_thresholds(pb, "cov"),
        "jac_thresholds": _spectrum_thresholds(pb, "jac"),
    }
    return PaperBNullspace(
        _ctx(config, model),
        _block(E7, e7, drop=("jac_prompts_steered",)),  # read by paperB_logits only
        _block(Thresholds, pb["null_thresholds"]),
        pb["active_k"],
    )


def paperB_calibrate(config: Mapping[str, Any], model: str, trait: str) -> PaperBCalibrate:
    pb = config["paperB"]
    return PaperBCalibrate(
        _ctx(config, model),
        trait,
        paperB_scorer(config, trait),
        float(pb["alpha"]),
        pb["alpha_mode"],
        _decoding(pb),
        _block(Calibration, pb["calibration"]),
        _block(Design, {**pb["design"], "delta": pb["delta"]}),
        pb["e1"]["n_stems"],
    )


def paperB_generate(config: Mapping[str, Any], model: str, trait: str) -> PaperBGenerate:
    pb = config["paperB"]
    return PaperBGenerate(
        _ctx(config, model),
        trait,
        pb["calibration"]["n_stems"],
        tuple(pb["families"]),
        _decoding(pb),
        _block(E1, pb["e1"]),
        _block(E2, pb["e2"]),
        _block(E3, pb["e3"]),
        _block(E6, pb["e6"]),
    )


def paperB_dtype_check(config: Mapping[str, Any]) -> PaperBDtypeCheck:
    pb = config["paperB"]
    chk = pb["dtype_check"]
    model = chk["model"] or sorted(paperB_models(config))[0]  # sorted: YAML mapping order must not matter
    trait = chk["trait"] or pb["traits"][0]
    return PaperBDtypeCheck(
        _ctx(config, model),
        trait,
        paperB_scorer(config, trait),
        pb["calibration"]["n_stems"],
        _decoding(pb),
        chk["samples"],
        chk["n_stems"],
        float(pb["delta"]),
    )


def paperB_score(config: Mapping[str, Any]) -> PaperBScore:
    return PaperBScore({t: paperB_scorer(config, t) for t in config["paperB"]["traits"]})


def paperB_logits(config: Mapping[str, Any], model: str) -> PaperBLogits:
    pb = config["paperB"]
    e7 = pb["e7"]
    return PaperBLogits(
        _ctx(config, model),
        tuple(pb["traits"]),
        pb["calibration"]["n_stems"],
        tuple(pb["families"]),
        _block(E4, pb["e4"]),
        e7["jac_prompts_steered"],
        e7["jac_chunk"],
        _spectrum_thresholds(pb, "jac"),
        float(e7["fisher_mass"]),
    )


def paperB_tables(config: Mapping[str, Any]) -> PaperBTables:
    pb = config["paperB"]
    return PaperBTables(
        config["seed"],
        pb["n_boot"],
        float(pb["bound_d"]),
        float(pb["delta"]),
        float(pb["design"]["tost_alpha"]),
        tuple(float(a) for a in pb["e2"]["alphas"]),
    )


def paperB_claims(config: Mapping[str, Any]) -> PaperBClaims:
    pb = config["paperB"]
    specs = model_specs(config)
    return PaperBClaims(
        config["seed"],
        {m: int(specs[m].n_layers or 0) // 2 for m in paperB_models(config)},
        float(pb["delta"]),
        float(pb["design"]["tost_alpha"]),
        float(pb["calibration"]["target_d"]),
        float(pb["calibration"]["max_ppl_ratio"]),
        _block(Thresholds, pb["null_thresholds"]),
    )


def paperB_figures(config: Mapping[str, Any]) -> PaperBFigures:
    pb = config["paperB"]
    return PaperBFigures(
        _spectrum_thresholds(pb, "cov"),
        _spectrum_thresholds(pb, "jac"),
        float(pb["delta"]),
        float(pb["calibration"]["target_d"]),
        float(pb["calibration"]["max_ppl_ratio"]),
    )
