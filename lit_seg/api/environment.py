"""The process and machine a run is on: its rank among a launcher's processes, the device (CPU model
and instruction set, or GPU), whether that device has bf16 arithmetic, and the library versions.
A run's record (:mod:`lit_seg.api.records`) carries these, so that a number knows where it was made.
"""

from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache
from importlib import metadata

# The libraries whose versions decide a run's numbers (and Python's).
LIBRARIES = ("torch", "lightning", "torchmetrics", "segmentation-models-pytorch", "timm", "torchvision",
             "jsonargparse", "wandb", "numpy")


def process_rank() -> int:
    """This process's global rank, from the launcher's environment (as Lightning reads it); 0 alone."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


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


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """``lscpu``'s model name (``/proc/cpuinfo``), else what the platform module says."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    """Whether the CPU computes in bf16 natively (AVX-512 BF16 or AMX). Without it, PyTorch's CPU
    bf16 kernels emulate the format and run several times slower than float32 (7x on an AVX2-only
    EPYC: a CCNet training step in bf16 autocast against fp32)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def device_description(accelerator: str | None = None) -> dict:
    """The device a run computes on: for CUDA the GPUs' name and count, else the CPU's model, the
    instruction set PyTorch dispatches to, whether it has bf16 arithmetic, and its cores."""
    import torch

    if accelerator in (None, "auto", "gpu", "cuda") and torch.cuda.is_available():
        return {"type": "cuda", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
                "bf16": bool(torch.cuda.is_bf16_supported())}
    return {"type": "cpu", "name": cpu_model(), "capability": torch.backends.cpu.get_cpu_capability(),
            "bf16": cpu_has_bf16(), "cores": os.cpu_count(), "threads": torch.get_num_threads()}


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def host() -> str:
    return platform.node() or os.environ.get("HOSTNAME", "")


def describe_command() -> str:
    return " ".join([os.path.basename(sys.argv[0]) if sys.argv else "python", *sys.argv[1:]])
