"""Shared test setup: offline hub, one torch thread, tiny-model factory."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

#: Modules whose tests run first. `make test` runs pytest with one worker per core (pytest-xdist, work stealing):
#: the SLURM cluster run, the longest test, starts at once on one worker while the other takes the rest.
FIRST = ("test_slurm_workflow.py", "test_rerun.py", "test_resume.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: FIRST.index(item.path.name) if item.path.name in FIRST else len(FIRST))


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
