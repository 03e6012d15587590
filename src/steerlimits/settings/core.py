"""Settings of the foundation stages: models, vectors, scorers, dose-response, claims; and the shared resolvers.

Resolved here and nowhere else: the steering layer (``layer``: ``middle`` = L // 2, a global index or a per-model
override), the prompt format of a behaviour (the tokenizer's chat template once, raw text, or a plain text frame
for a model without a template), the scorer of a behaviour, and the model specs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from steerlimits.registry import ModelSource, ModelSpec
from steerlimits.settings.config import model_specs

__all__ = [
    "Claims",
    "DoseResponse",
    "Examples",
    "Manifest",
    "ExtractVectors",
    "PrepareModel",
    "PromptFormat",
    "ScoreGenerations",
    "SteerGenerate",
    "ValidateScorers",
    "layer_of",
    "prompt_format_of",
    "scorer_of",
]

PromptFormat = Literal["chat", "raw", "frame"]
Device = Literal["auto", "cpu", "cuda"]
Positions = Literal["all", "last_prompt_and_generated"]


# ------------------------------------------------------------------------------------------------- resolvers
def layer_of(config: Mapping[str, Any], model: str) -> int:
    """The steering layer ``l`` of ``model`` (input of block ``l``): its own ``layer``, else the global one;
    ``middle`` means ``L // 2``."""
    spec = model_specs(config)[model]
    value = config["models"][model].get("layer", config.get("layer", "middle"))
    assert spec.n_layers is not None
    return spec.n_layers // 2 if value == "middle" else int(value)


def prompt_format_of(config: Mapping[str, Any], behaviour: str, spec: ModelSpec) -> PromptFormat:
    """``chat`` where the config asks for it and the model has a template; a plain ``frame`` where it asks for
    chat and the model has none (a base model); else ``raw``."""
    wanted = config["vectors"]["format"].get(behaviour, "chat")
    if wanted == "chat":
        return "chat" if spec.chat_template else "frame"
    return "raw"


def scorer_of(config: Mapping[str, Any], behaviour: str) -> str:
    return str(config["steering"]["dose_response"]["scorer"][behaviour])


# ------------------------------------------------------------------------------------------------- stages
@dataclass(frozen=True)
class PrepareModel:
    model: ModelSource


@dataclass(frozen=True)
class ExtractVectors:
    model: ModelSource
    behaviour: str
    prompt_format: PromptFormat
    max_pairs: int
    batch_size: int
    data_dir: str
    device: Device


@dataclass(frozen=True)
class ValidateScorers:
    n_train: int
    n_test: int
    validate: tuple[str, ...]
    seed: int


@dataclass(frozen=True)
class SteerGenerate:
    model: ModelSource
    behaviour: str
    layer: int
    prompt_format: PromptFormat
    method: str
    alphas: tuple[float, ...]
    n_generations: int
    max_new_tokens: int
    temperature: float
    top_p: float
    batch_size: int
    positions: Positions
    seed: int
    data_dir: str
    device: Device


@dataclass(frozen=True)
class ScoreGenerations:
    behaviour: str
    scorer: str


@dataclass(frozen=True)
class DoseResponse:
    n_boot: int
    seed: int


@dataclass(frozen=True)
class Claims:
    """Concatenates the papers' claims tables and links each row to its evidence under ``results/<run>/``."""

    run: str


@dataclass(frozen=True)
class Examples:
    """Example texts for the report, drawn with the seed."""

    run: str
    seed: int
    per_condition: int


@dataclass(frozen=True)
class Manifest:
    """The provenance manifest of a run: records the whole validated config (so any edit re-writes it)."""

    run: str
    config: dict[str, Any]
    config_hash: str


def prepare_model(config: Mapping[str, Any], model: str) -> PrepareModel:
    return PrepareModel(ModelSource.of(model_specs(config)[model]))


def extract_vectors(config: Mapping[str, Any], model: str, behaviour: str) -> ExtractVectors:
    spec = model_specs(config)[model]
    v = config["vectors"]
    return ExtractVectors(
        ModelSource.of(spec),
        behaviour,
        prompt_format_of(config, behaviour, spec),
        v["max_pairs"],
        v["batch_size"],
        config["data_dir"],
        config["device"],
    )


def validate_scorers(config: Mapping[str, Any]) -> ValidateScorers:
    s = config["scorers"]
    return ValidateScorers(s["n_train"], s["n_test"], tuple(s["validate"]), config["seed"])


def steer_generate(config: Mapping[str, Any], model: str, behaviour: str) -> SteerGenerate:
    spec = model_specs(config)[model]
    d = config["steering"]["dose_response"]
    return SteerGenerate(
        ModelSource.of(spec),
        behaviour,
        layer_of(config, model),
        prompt_format_of(config, behaviour, spec),
        d["method"],
        tuple(float(a) for a in d["alphas"]),
        d["n_generations"],
        d["max_new_tokens"],
        float(d["temperature"]),
        float(d["top_p"]),
        d["batch_size"],
        d["positions"],
        config["seed"],
        config["data_dir"],
        config["device"],
    )


def score_generations(config: Mapping[str, Any], model: str, behaviour: str) -> ScoreGenerations:
    return ScoreGenerations(behaviour, scorer_of(config, behaviour))


def dose_response(config: Mapping[str, Any]) -> DoseResponse:
    return DoseResponse(config["steering"]["dose_response"]["n_boot"], config["seed"])


def claims(config: Mapping[str, Any]) -> Claims:
    return Claims(config["run"])


def examples(config: Mapping[str, Any]) -> Examples:
    return Examples(config["run"], config["seed"], config["report"]["examples"])


def manifest(config: Mapping[str, Any]) -> Manifest:
    from steerlimits.settings.config import config_hash

    return Manifest(config["run"], dict(config), config_hash(config))
