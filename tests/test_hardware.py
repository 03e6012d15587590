"""The CPU check behind the bf16 warning and the manifest's ``cpu`` record (steerlimits.hardware)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from steerlimits import hardware
from steerlimits.settings import validate_config

ROOT = Path(__file__).resolve().parents[1]
SLOW = {"model": "Test CPU", "torch_capability": "AVX2", "native_bf16": False}
FAST = {**SLOW, "native_bf16": True}


def _default() -> dict:
    return validate_config(yaml.safe_load((ROOT / "config" / "default.yaml").read_text()))


def test_cpuinfo_flags_decide_native_bf16(tmp_path: Path) -> None:
    text = "processor\t: 0\nmodel name\t: {m}\nflags\t\t: fpu avx2 {f}\n\nprocessor\t: 1\nflags\t\t: other\n"
    for flag, native in (("amx_bf16 amx_tile", True), ("avx512f avx512_bf16", True), ("avx512f", False), ("", False)):
        (tmp_path / "cpuinfo").write_text(text.format(m="Some CPU", f=flag))
        model, flags = hardware._cpuinfo(tmp_path / "cpuinfo")
        assert model == "Some CPU" and "avx2" in flags and "other" not in flags  # the first processor only
        assert bool(flags & set(hardware.NATIVE_BF16_FLAGS)) is native
    assert hardware._cpuinfo(tmp_path / "missing") == (None, set())


def test_cpu_info_agrees_with_torch() -> None:
    import torch

    info = hardware.cpu_info()
    assert info["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    probes = [getattr(torch.cpu, p, None) for p in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if all(callable(p) for p in probes):  # PyTorch's own probes of the same instructions
        assert info["native_bf16"] == any(p() for p in probes)


def test_bf16_keys_of_the_default_config() -> None:
    cfg = _default()
    assert hardware.bf16_keys(cfg) == list(hardware.BF16_KEYS)  # every bf16 path is on by default
    cfg["paperA"]["enabled"] = False
    assert hardware.bf16_keys(cfg) == ["paperB.dtype"]
    cfg["paperB"]["dtype"] = "float32"
    assert hardware.bf16_keys(cfg) == []


def test_bf16_warning_names_the_keys_only_where_bf16_is_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = {**_default(), "device": "cpu"}
    msg = hardware.bf16_warning(cfg, SLOW)
    assert msg is not None and "Test CPU" in msg
    assert all(key in msg for key in hardware.BF16_KEYS)
    assert hardware.bf16_warning(cfg, FAST) is None  # AMX / AVX512-BF16: bf16 is the fast path
    assert hardware.bf16_warning({**cfg, "device": "cuda"}, SLOW) is None  # a GPU does the matrix work
    assert hardware.bf16_warning({**cfg, "device": "auto"}, SLOW) is not None  # auto without a GPU is the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert hardware.bf16_warning({**cfg, "device": "auto"}, SLOW) is None


def test_smoke_run_records_the_cpu_and_warns_where_bf16_is_slow(smoke_run: Path) -> None:
    """The smoke run's manifest names the CPU its runtimes were measured on, and its Snakemake log carries the
    start-of-run warning exactly when this CPU lacks bf16 matrix instructions (the smoke config keeps the
    default bf16 paths)."""
    manifest = json.loads((smoke_run / "results" / "smoke" / "MANIFEST.json").read_text())
    assert manifest["cpu"] == json.loads(json.dumps(hardware.cpu_info()))
    logs = [p.read_text(errors="replace") for p in (smoke_run / ".snakemake" / "log").glob("*.snakemake.log")]
    assert logs, "the smoke run left no Snakemake log"
    warned = any("no bf16 matrix instructions" in text for text in logs)
    assert warned is (not hardware.cpu_info()["native_bf16"])
