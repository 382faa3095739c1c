"""The process and machine a run is on: its rank among a launcher's processes, the device (CPU model
and instruction set, or GPU), whether that device has bf16 arithmetic, and the library versions.
A run's record (:mod:`lit_seg.api.records`) carries these, so that a number knows where it was made.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from importlib import metadata

from lit_seg.train.precision import cpu_flags, cpu_has_bf16

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


def cpu_summary() -> str:
    """The CPU as a timing should name it: model, the vector extensions that decide fp32 and bf16
    speed (from ``lscpu``'s flags), what PyTorch dispatches to, and the logical CPUs, e.g.
    ``Intel(R) Xeon(R) Processor (AVX2, AVX-512, AVX-512 BF16, AMX; torch: AVX512), 2 logical CPUs``."""
    import torch

    names = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX-512 BF16", "amx_bf16": "AMX"}
    flags = cpu_flags()
    found = [name for flag, name in names.items() if flag in flags] or ["no AVX2"]
    return (f"{cpu_model()} ({', '.join(found)}; torch: {torch.backends.cpu.get_cpu_capability()}), "
            f"{os.cpu_count()} logical CPUs")


def device_description(accelerator: str | None = None) -> dict:
    """The device a run computes on: for CUDA the GPUs' name and count, else the CPU's model, the
    instruction set PyTorch dispatches to, whether it has bf16 arithmetic, and its cores."""
    import torch

    if accelerator in (None, "auto", "gpu", "cuda") and torch.cuda.is_available():
        return {"type": "cuda", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
                "bf16": bool(torch.cuda.is_bf16_supported(including_emulation=False))}
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
