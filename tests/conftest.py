"""Shared test setup: offline hub, one torch thread, tiny-model factory, the packaged-model cache built once."""

from __future__ import annotations

import fcntl
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_llama() -> tuple[torch.nn.Module, object]:
    """A 3-layer random Llama with the project's BPE tokenizer (trained on data/)."""
    from steerlimits.tiny import build_random_model

    return build_random_model("llama", {"n_layers": 3, "d_model": 32, "n_heads": 4, "vocab_size": 300, "seed": 0})


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory):
    """A working folder holding a finished smoke run (see tests/smoke_workdir.py)."""
    from smoke_workdir import build

    return build(tmp_path_factory.mktemp("smoke_run") / "wd")


@pytest.fixture(scope="session", autouse=True)
def _packaged_model_cache(request: pytest.FixtureRequest) -> None:
    """Build the packaged SmolLM2 cache (``models/smollm2-135m``) once, under a file lock, before any real-model test.

    ``make test`` runs the tests in several pytest-xdist workers; ``models.prepare`` rebuilds the cache in a fixed
    ``.partial`` folder, so two workers preparing it at the same time would remove each other's files. The first
    worker builds it, the others wait on the lock and then find it built. Without the packaged GGUF the real-model
    tests skip themselves, so that error is left to them."""
    if not any(item.get_closest_marker("real_model") for item in request.session.items):
        return
    from steerlimits.models import DEFAULT_CACHE, PACKAGED, AssetError, model_dir, prepare

    key = "smollm2-135m"
    DEFAULT_CACHE.mkdir(parents=True, exist_ok=True)
    with open(DEFAULT_CACHE / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (model_dir(key) / "steerlimits_model.json").exists():
            try:
                prepare(PACKAGED[key])
            except AssetError:
                pass
