"""The ``device`` setting (docs/howto/run-on-a-gpu.md).

On every machine: how ``auto`` / ``cpu`` / ``cuda`` resolve, the clear error where CUDA is asked for and absent, and
that loading on the CPU leaves the model untouched. Where CUDA is present (skipped elsewhere; run on a GPU machine
with ``pytest tests/test_device.py``): a model loaded through ``load_prepared(..., "cuda")`` and fed CPU inputs, as
every step does, computes what the same model computes on the CPU, through the project's hook layer, steered
generation and inversion engine. Ground truth is the CPU run of the same functions, and Hugging Face's own
``hidden_states``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from steerlimits import hooks, models
from steerlimits.models import AssetError, ModelSpec, load_prepared, prepare, resolve_device

torch.set_num_threads(1)
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device (the GPU half runs on a GPU machine)")
LAYER = 2


def _spec(arch: str = "llama") -> ModelSpec:
    return ModelSpec(
        key=f"tiny-device-{arch}",
        source="random",
        architecture=arch,
        random={"n_layers": 4, "d_model": 64, "n_heads": 4, "vocab_size": 256, "seed": 5},
        n_layers=4,
        d_model=64,
    )


def _marker(spec: ModelSpec, cache: Path) -> Path:
    prepare(spec, cache)
    return cache / spec.key / "steerlimits_model.json"


# ------------------------------------------------------------------------------------------- any machine
@pytest.mark.parametrize("visible", [False, True])
def test_auto_follows_cuda_availability(monkeypatch: pytest.MonkeyPatch, visible: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: visible)
    assert resolve_device("auto").type == ("cuda" if visible else "cpu")
    assert resolve_device("cpu").type == "cpu"


def test_cuda_without_a_device_fails_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(AssetError, match="device: cuda, but no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(AssetError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_cpu_load_adds_no_input_hook(tmp_path: Path) -> None:
    spec = _spec()
    model, _ = load_prepared(spec, _marker(spec, tmp_path), "cpu")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert not model._forward_pre_hooks  # the input-moving hook exists only off the CPU


def test_every_model_loading_call_passes_the_device() -> None:
    """Each step that loads a language model passes its stage's ``device`` setting, so `--config device=cuda`
    reaches it (and, being part of the stage's params, re-runs it)."""
    src = Path(models.__file__).parent
    calls = [
        (path.name, line.strip())
        for path in src.rglob("*.py")
        if path.name != "models.py"
        for line in path.read_text().splitlines()
        if "load_prepared(" in line
    ]
    assert calls, "no step loads a model through load_prepared"
    assert [c for c in calls if "device" not in c[1]] == []


# --------------------------------------------------------------------------------------------- GPU only
@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, torch.nn.Module, object]:
    spec = _spec()
    marker = _marker(spec, tmp_path_factory.mktemp("device-cache"))
    cpu, tok = load_prepared(spec, marker, "cpu")
    gpu, _ = load_prepared(spec, marker, "cuda")
    return cpu, gpu, tok


def _ids(n: int = 10, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 256, (n,), generator=torch.Generator().manual_seed(seed))


def _vector(seed: int = 2, scale: float = 8.0) -> torch.Tensor:
    return torch.randn(64, generator=torch.Generator().manual_seed(seed)) * scale


@needs_cuda
def test_gpu_hooks_equal_hidden_states_and_cpu(pair) -> None:
    cpu, gpu, _ = pair
    assert {p.device.type for p in gpu.parameters()} == {"cuda"}
    ids = _ids()[None]  # built on the CPU, as every step builds them
    with torch.no_grad():
        ours = hooks.forward_hidden(gpu, ids)
        theirs = gpu(input_ids=ids, output_hidden_states=True).hidden_states
        ref = hooks.forward_hidden(cpu, ids)
    for a, b, c in zip(ours, theirs, ref):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a.cpu(), c, rtol=1e-4, atol=1e-4)


@needs_cuda
def test_gpu_steering_alpha_zero_is_identity_and_matches_cpu(pair) -> None:
    cpu, gpu, _ = pair
    ids, v = _ids()[None], _vector()  # the vector is on the CPU, as read from its file
    with torch.no_grad():
        plain = gpu(input_ids=ids).logits
        with hooks.add_vector(gpu, LAYER, v, 0.0):
            zero = gpu(input_ids=ids).logits
        with hooks.add_vector(gpu, LAYER, v, 2.0):
            steered = gpu(input_ids=ids).logits
        with hooks.add_vector(cpu, LAYER, v, 2.0):
            steered_cpu = cpu(input_ids=ids).logits
    assert torch.equal(plain, zero)
    assert not torch.allclose(plain, steered)
    torch.testing.assert_close(steered.cpu(), steered_cpu, rtol=1e-4, atol=1e-4)


@needs_cuda
def test_gpu_greedy_generation_matches_cpu(pair) -> None:
    from steerlimits.steer import greedy

    cpu, gpu, tok = pair
    prompts = [_ids(6, s).tolist() for s in range(4)]
    kw = dict(vector=_vector(), alpha=2.0, layer=LAYER, positions="all", batch_size=4)
    on_gpu = greedy(gpu, tok, prompts, 8, **kw)
    on_cpu = greedy(cpu, tok, prompts, 8, **kw)
    assert on_gpu == on_cpu


@needs_cuda
def test_gpu_inversion_is_exact_and_screen_agrees_with_cpu(pair) -> None:
    from steerlimits.invert import InversionConfig, invert, target_states

    cpu, gpu, _ = pair
    ids = _ids(6)
    config = InversionConfig(measure_at=LAYER, mode="exhaustive", early_exit=False, screen_dtype="bfloat16")
    natural = invert(gpu, target_states(gpu, ids, LAYER), config, floor_ids=ids, progress=False)
    assert natural.ids == ids.tolist() and all(p.exact for p in natural.positions)
    steered = {
        name: invert(
            m, target_states(m, ids, LAYER, vector=_vector(), alpha=1.0), config, floor_ids=ids, progress=False
        )
        for name, m in (("cpu", cpu), ("cuda", gpu))
    }
    assert steered["cuda"].ids == steered["cpu"].ids
    for a, b in zip(steered["cpu"].positions, steered["cuda"].positions):
        assert a.topk_tokens[0] == b.topk_tokens[0]
        assert b.topk_dist[0] == pytest.approx(a.topk_dist[0], rel=1e-3)
