"""What the CPU can do fast, and which configured bfloat16 paths it would slow down.

Several stages run their matrix work in bfloat16 where only an order or a behaviour is needed (the keys of
:data:`BF16_KEYS`). That is a speed-up only on CPUs with bf16 matrix instructions (Intel AMX, AVX512-BF16). On a
CPU with neither, PyTorch emulates bf16 matmuls and they run several times *slower* than float32 (measured on a
2-core AMD EPYC virtual machine with AVX2 only: 16–19 GFLOP/s in bf16 against 46–74 in float32 for the models'
matmul shapes, one thread, ``bench/bench_dtype.py``; docs/howto/cpu-speed.md).

The dtype is part of the config, so a run does not switch it by itself (bf16 and float32 generations differ, and
results must not depend on the machine); :func:`bf16_warning` tells the user at the start of a run instead, and
:func:`cpu_info` goes into the run's manifest so that every measured runtime names the CPU it was measured on.
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["BF16_KEYS", "bf16_keys", "bf16_warning", "cpu_info"]

#: Config keys (dotted) whose value ``bfloat16`` runs matrix work in bf16 on the run's device.
BF16_KEYS: tuple[str, ...] = (
    "paperA.e1.screen_dtype",
    "paperA.e3.demo_dtype",
    "paperA.e4.gcg_screen",
    "paperB.dtype",
)

#: /proc/cpuinfo flags that give bf16 matrix work native speed.
NATIVE_BF16_FLAGS: tuple[str, ...] = ("amx_bf16", "avx512_bf16")


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str | None, set[str]]:
    """The first ``model name`` and the flags of the first processor in ``path`` (None, {} where unreadable)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, set()
    model: str | None = None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


@functools.cache
def cpu_info() -> dict[str, Any]:
    """The CPU in a few fields: model name, logical CPUs, PyTorch's vector capability (``AVX2``, ``AVX512``, …),
    the bf16-relevant flags present and whether bf16 matrix work has native speed (``native_bf16``)."""
    import torch

    model, flags = _cpuinfo()
    native = bool(flags & set(NATIVE_BF16_FLAGS))
    if not flags:  # no /proc/cpuinfo (not Linux): ask PyTorch
        probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        native = any(bool(getattr(torch.cpu, p, lambda: False)()) for p in probes)
    return {
        "model": model or platform.processor() or None,
        "logical_cpus": os.cpu_count(),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_flags": sorted(flags & {*NATIVE_BF16_FLAGS, "amx_tile", "avx512f"}),
        "native_bf16": native,
    }


def _get(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def bf16_keys(config: Mapping[str, Any]) -> list[str]:
    """The keys of :data:`BF16_KEYS` set to ``bfloat16`` in an enabled paper of ``config``."""
    return [
        key
        for key in BF16_KEYS
        if _get(config, key) == "bfloat16" and _get(config, f"{key.split('.')[0]}.enabled") is not False
    ]


def bf16_warning(config: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> str | None:
    """A warning when ``config`` runs bf16 paths on the CPU of ``info`` (default: this one) without native bf16;
    None when nothing is affected (no bf16 key, a CUDA device, or a CPU with AMX / AVX512-BF16)."""
    import torch

    device = str(config.get("device", "auto"))
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return None
    keys = bf16_keys(config)
    info = cpu_info() if info is None else info
    if not keys or info.get("native_bf16"):
        return None
    return (
        f"this CPU ({info.get('model') or 'unknown'}, PyTorch capability {info.get('torch_capability')}) has no "
        f"bf16 matrix instructions (AMX or AVX512-BF16): {', '.join(keys)} = bfloat16 will run several times "
        "slower than float32 here. The results stay valid; for speed set them to float32 in a config of your own "
        "(the generations then differ from the committed bf16 run; docs/howto/cpu-speed.md)."
    )
