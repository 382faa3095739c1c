"""Precision by capability: bf16 autocast where the device computes in bf16, float32 elsewhere.

PyTorch runs bf16 on any CPU, but only a CPU with AVX-512 BF16 or AMX computes in it; elsewhere the
format is emulated and autocast is several times slower than float32 (a CCNet training step took
7x its float32 time on an AVX2-only AMD EPYC), where a GPU or a bf16 CPU takes 0.6-0.9x.
"""

from __future__ import annotations

from functools import lru_cache

import torch

AUTO = "auto"
# The CPU flags of bf16 arithmetic (lscpu's names): AVX-512 BF16, AMX's bf16 tiles.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (``/proc/cpuinfo``); empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    """Whether the CPU computes in bf16 natively (AVX-512 BF16 or AMX)."""
    return bool(BF16_FLAGS & cpu_flags())


def resolve_precision(accelerator: str | None = "auto") -> tuple[str, str]:
    """``precision: auto`` for ``accelerator``: (``bf16-mixed`` or ``32-true``, the reason in words)."""
    accelerator = str(accelerator or "auto").lower()
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        # Not counting emulation: a pre-Ampere GPU (V100, T4) runs bf16 emulated, slower than fp32.
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bf16-mixed", f"the GPU ({torch.cuda.get_device_name(0)}) computes in bf16"
        return "32-true", f"the GPU ({torch.cuda.get_device_name(0)}) has no bf16 arithmetic"
    flags = sorted(BF16_FLAGS & cpu_flags())
    if flags:
        return "bf16-mixed", f"the CPU computes in bf16 ({', '.join(flags)})"
    return "32-true", "the CPU has no bf16 arithmetic (no AVX-512 BF16 or AMX): bf16 would be emulated, slower"
