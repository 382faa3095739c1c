"""Measurement worker of the cost harness (driven by ``lit-seg bench``, lit_seg/study/bench.py).

One call of :func:`measure` builds one operator or head, one input, and measures, in order:

1. forward + backward, counted by ``FlopCounterMode`` and by the memory tracker (also the
   first warm-up);
2. forward (``torch.no_grad``), counted the same way (unless ``forward`` is False);
3. ``warmup`` more forward + backward passes;
4. ``repeats`` timed forward passes (no_grad; unless ``forward`` is False) and ``repeats`` timed
   forward + backward passes, each continued until they add up to ``min_time`` seconds (at most
   ``max_repeats``); the median is reported. ``repeats`` 0: the forward + backward time is that
   of the counted pass 1 (for passes of many seconds, where the counting costs well under 1%).

Memory (:class:`PeakMemory`): on CUDA ``torch.cuda.max_memory_allocated`` minus the allocation
at the start. On the CPU, two numbers from the same pass:

- ``peak`` (reported): torch's own allocations. The profiler with ``profile_memory=True``
  receives every allocation and free of torch's CPU allocator as a ``[memory]`` event with its
  size; the running sum of those events from the start of the pass is the memory allocated
  since then, and its maximum is the peak, the CPU counterpart of ``max_memory_allocated``. It
  is exact and deterministic, and sees each tensor at the moment it is created and freed.
- ``rss`` (cross-check): growth of the process's peak resident set, ``VmHWM`` (reset at the
  start by writing 5 to ``/proc/self/clear_refs``) minus ``VmRSS`` at the start. It also sees
  memory torch does not allocate itself (oneDNN scratch, malloc arenas) but includes page
  granularity and allocator caching, and needs a fresh process: the driver runs each
  measurement in a fresh child process (forked from a server that only imported the modules),
  and only the first pass (forward + backward) is measured this way: pages it leaves resident
  would hide later passes' growth. Allocations served from memory the server had already
  touched (freed import-time heap) do not show in it either, so it is a cross-check, not the
  reported number.

Everything runs in the module's training mode (BatchNorm uses batch statistics).
"""

import contextlib
import logging
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from lit_seg.models.heads import HEADS
from lit_seg.study import seed_ops
from lit_seg.train import flops as _flops

# FlopCounterMode (torch 2.14) has no formula for the CPU flash-attention kernels that
# F.scaled_dot_product_attention runs on the CPU: without them our dense operators would count
# only their convolutions. lit_seg.train.flops registers them (on import; this call is a no-op then),
# so the harness and the runs' summaries (head_gflops) count the same way.
_flops.register_cpu_attention_flops()

# --- what is measured ----------------------------------------------------------------------------

# Each operator as the seed builds it for C input channels; ours is built from it by
# seed_ops.ours_from_seed (same configuration, same weights).
SEED_OPERATORS: dict[str, Callable[[int], nn.Module]] = {
    # OCNet base-OC's block: key and value channels C/2 (the official 512 -> 256, 256).
    "self_attention": lambda c: seed_ops._SelfAttentionBlock(c, c // 2, c // 2, c),
    # Non-local, embedded Gaussian, C' = C/2, no sub-sampling (mmsegmentation's NLHead).
    "non_local": lambda c: seed_ops._NonLocalBlockND(c, sub_sample=False),
    "non_local_concat": lambda c: seed_ops._NonLocalBlockNDConcatenation(c, sub_sample=False),
    "pam": lambda c: seed_ops._PositionAttentionModule(c),
    "cam": lambda c: seed_ops._ChannelAttentionModule(),
    "criss_cross_r1": lambda c: seed_ops.Recurrent(seed_ops.CrissCrossAttention(c), 1),
    "criss_cross_r2": lambda c: seed_ops.Recurrent(seed_ops.CrissCrossAttention(c), 2),
    "global_context": lambda c: seed_ops.GlobalContextBlock(c, 16),
}

OPERATOR_LABELS = {
    "self_attention": "SelfAttention2d (OCNet, key/value C/2)",
    "non_local": "NonLocal2d embedded Gaussian (C' = C/2)",
    "non_local_concat": "NonLocal2d concatenation (C' = C/2)",
    "pam": "PositionAttention (DANet PAM, C/8)",
    "cam": "ChannelAttention (DANet CAM)",
    "criss_cross_r1": "CrissCrossAttention R=1",
    "criss_cross_r2": "CrissCrossAttention R=2",
    "global_context": "GlobalContextBlock (ratio 1/16)",
}

NUM_CLASSES = 19



def seed_memory_estimate(name: str, channels: int, size: tuple[int, int], batch: int, itemsize: int) -> float:
    """Bytes of the largest temporaries the seed's forward + backward keeps (a lower bound).

    The concatenation seed repeats theta and phi to (B, C', N, M) and concatenates them
    (4 such tensors, kept for the backward); the dense seeds keep about three (B, N, N) matrices.
    """
    n = size[0] * size[1]
    if name == "non_local_concat":
        return 4.0 * batch * (channels // 2) * n * n * itemsize
    if name in ("self_attention", "non_local", "pam"):
        return 3.0 * batch * n * n * itemsize
    return 0.0


def nonzero_scales(module: nn.Module) -> nn.Module:
    """Zero-initialised parameters (gamma, alpha, the BN after W, zeroed output convs) set to 0.1,
    so the measured block is not the identity. The work done does not depend on the values."""
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                p.fill_(0.1)
    return module


def experiment_head(config: str, overrides: Sequence[str] = (), batch: int | None = None
                    ) -> tuple[nn.Module, list[Tensor], nn.Module, tuple[int, int]]:
    """The decode head of an experiment YAML as ``lit-seg fit --config`` builds it, the encoder
    features it sees at the experiment's training input (``batch`` images, default the data
    module's batch size; random images, encoder run once without gradients), the whole model,
    and the training input's (H, W)."""
    from lit_seg.cli import LitSegCLI, expand_argv

    argv = expand_argv(["--config", config, *overrides, "--trainer.logger=false", "--trainer.callbacks=[]",
                        "--trainer.enable_checkpointing=false"])
    # Quietly: LightningCLI warns when a process with its own argv passes args=, and logs the
    # seed and the accelerators at INFO.
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels, argv0 = [lg.level for lg in loggers], sys.argv
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    sys.argv = sys.argv[:1]
    try:
        with contextlib.redirect_stdout(None):
            cli = LitSegCLI(args=argv, run=False)
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        sys.argv = argv0
    data = cli.datamodule.hparams
    size = getattr(cli.datamodule, "image_size", None) or data.get("image_size") or data.get("crop_size")
    if size is None:
        raise ValueError(f"{config}: no image_size or crop_size in the data module's arguments")
    model = cli.model.model
    with torch.no_grad():
        features = model.encoder(torch.randn(batch or data.get("batch_size", 2), 3, *size))
    return model.head, [f.detach() for f in features], model, tuple(size)


def build(spec: dict) -> nn.Module:
    kind, name, channels = spec["kind"], spec.get("name"), spec.get("channels")
    torch.manual_seed(spec.get("seed", 0))
    if kind == "operator":
        seed = nonzero_scales(SEED_OPERATORS[name](channels))
        return seed if spec["impl"] == "seed" else seed_ops.ours_from_seed(seed)
    if kind == "head":
        # Two encoder maps of C channels, both given the same features (see measure): a cascade
        # head (OCR) reads its first stage off the second-to-last; every other head the last.
        return nonzero_scales(HEADS[name].build([channels, channels], NUM_CLASSES, channels=spec["head_channels"]))
    raise ValueError(f"unknown kind {kind!r}")


# --- memory --------------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _quiet_stderr():
    """The CPU profiler's C++ side prints start/stop lines (and, on CPU-only machines with a CUDA
    build, a device-count error) on fd 2; hide them during the pass."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class PeakMemory:
    """Peak memory growth of the enclosed code, in bytes: ``peak`` (torch's allocator) and ``rss``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak: float = math.nan
        self.rss: float = math.nan

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        self._rss_ok = _reset_peak_rss()
        self._rss0 = _status_kib("VmRSS")
        self._quiet = _quiet_stderr()
        self._quiet.__enter__()
        self._prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)
        self._prof.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = float(torch.cuda.max_memory_allocated(self.device) - self._base)
            return
        hwm = _status_kib("VmHWM")
        try:
            self._prof.__exit__(*exc)
        finally:
            self._quiet.__exit__(*exc)
        if self._rss_ok and hwm is not None and self._rss0 is not None:
            self.rss = float((hwm - self._rss0) * 1024)
        events = [e for e in self._prof.profiler.kineto_results.events()
                  if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
        events.sort(key=lambda e: e.start_ns())
        current = peak = 0
        for event in events:
            current += event.nbytes()
            peak = max(peak, current)
        self.peak = float(peak)


# --- passes --------------------------------------------------------------------------------------


def _outputs(out) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        return list(out.values())
    return list(out)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _configure(spec: dict) -> None:
    """Threads and denormal handling, set before any computation (OpenMP workers inherit the
    floating-point mode of the thread that creates them)."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    # Subnormal floats make x86 arithmetic tens of times slower (microcode assists). DANet's
    # channel attention produces them: its softmax over raw C x C energies (of order N) leaves
    # many weights below 1e-38, and both the seed's code and ours then run ~14x slower on this
    # CPU. The harness flushes them to zero by default so that times reflect the arithmetic;
    # ``flush_denormal: False`` measures PyTorch's default mode.
    torch.set_flush_denormal(bool(spec.get("flush_denormal", True)))


def measure(spec: dict) -> dict:
    """Measures one operator or head (see the module docstring); returns a flat dict of results."""
    if spec["kind"] == "matmul":
        return measure_matmul(spec)
    _configure(spec)
    device = torch.device(spec.get("device", "cpu"))
    dtype = getattr(torch, spec.get("dtype", "float32"))
    if spec["kind"] == "experiment":
        module, features, model, image_size = experiment_head(spec["config"], spec.get("overrides", []),
                                                              spec.get("batch"))
        module = module.to(device=device, dtype=dtype).train()
        features = [f.to(device=device, dtype=dtype).requires_grad_() for f in features]
        inputs, leaves = features, features
        with torch.no_grad():  # output shapes for the gradients
            out_shapes = [o.shape for o in _outputs(module(features))]
        model_flops = _flops.count_flops(model.eval(), torch.randn(1, 3, *image_size))
    else:
        module = build(spec).to(device=device, dtype=dtype).train()
        height, width = spec["size"]
        x = torch.randn(spec["batch"], spec["channels"], height, width, device=device, dtype=dtype, requires_grad=True)
        inputs, leaves = ([x, x] if spec["kind"] == "head" else x), [x]
        out_shapes = ([(spec["batch"], NUM_CLASSES, height, width)] * len(module.loss_weights) if spec["kind"] == "head"
                      else [x.shape])
    result = {"params": sum(p.numel() for p in module.parameters()), "threads": torch.get_num_threads()}
    if spec["kind"] == "experiment":
        result["model_params"] = sum(p.numel() for p in model.parameters())
        result["model_flops_fwd"] = model_flops

    def forward():
        return _outputs(module(inputs))

    grads: list[Tensor] = []

    def forward_backward():
        torch.autograd.backward(forward(), grads)

    def clear():
        module.zero_grad(set_to_none=True)
        for leaf in leaves:
            leaf.grad = None

    # 1. forward + backward: FLOPs and memory. First in the process, so that the RSS growth is
    #    not hidden by pages an earlier pass left resident.
    # Output gradients of the right shapes, made without a forward pass (except for experiments,
    # whose output sizes need one): an operator keeps the input's shape, a head gives
    # (B, classes, H, W) logits per loss (its ``loss_weights``).
    grads[:] = [torch.randn(shape, device=device, dtype=dtype) for shape in out_shapes]
    clear()
    with FlopCounterMode(display=False) as counter, PeakMemory(device) as memory:
        _sync(device)
        start = time.perf_counter()
        forward_backward()
        _sync(device)
        counted_seconds = time.perf_counter() - start
    result["flops_fwdbwd"] = counter.get_total_flops()
    result["peak_fwdbwd"], result["rss_fwdbwd"] = memory.peak, memory.rss
    # 2. forward (no autograd graph): FLOPs and memory (torch's allocator only: RSS is no longer
    #    meaningful after the first pass)
    result["flops_fwd"] = result["peak_fwd"] = math.nan
    if spec.get("forward", True):
        clear()
        with torch.no_grad():
            with FlopCounterMode(display=False) as counter, PeakMemory(device) as memory:
                forward()
        result["flops_fwd"] = counter.get_total_flops()
        result["peak_fwd"] = memory.peak
    # 3. warm-up
    for _ in range(spec.get("warmup", 1)):
        clear()
        forward_backward()
    # 4. timing
    times_fwd, times_fwdbwd = [], []
    repeats, min_time, max_repeats = spec.get("repeats", 3), spec.get("min_time", 0.0), spec.get("max_repeats", 30)

    def timed(run, times):
        # ``repeats`` passes, and more until they add up to ``min_time`` seconds (fast operators
        # get enough samples for a stable median), at most ``max_repeats``.
        while repeats and (len(times) < repeats or (sum(times) < min_time and len(times) < max_repeats)):
            _sync(device)
            start = time.perf_counter()
            run()
            _sync(device)
            times.append(time.perf_counter() - start)

    if spec.get("forward", True):
        with torch.no_grad():
            timed(forward, times_fwd)

    if repeats == 0:  # the counted pass is the one timed sample (large sizes in the sweep)
        times_fwdbwd.append(counted_seconds)
    while repeats and (len(times_fwdbwd) < repeats
                       or (sum(times_fwdbwd) < min_time and len(times_fwdbwd) < max_repeats)):
        clear()
        _sync(device)
        start = time.perf_counter()
        forward_backward()
        _sync(device)
        times_fwdbwd.append(time.perf_counter() - start)
    result["fwd_ms"] = 1e3 * statistics.median(times_fwd) if times_fwd else math.nan
    result["fwdbwd_ms"] = 1e3 * statistics.median(times_fwdbwd) if times_fwdbwd else math.nan
    result["fwd_ms_all"] = [round(1e3 * t, 2) for t in times_fwd]
    result["fwdbwd_ms_all"] = [round(1e3 * t, 2) for t in times_fwdbwd]
    return result


def measure_matmul(spec: dict) -> dict:
    """GFLOP/s of one (n x n) @ (n x n) product: median of ``repeats`` after two warm-ups."""
    _configure(spec)
    device = torch.device(spec.get("device", "cpu"))
    dtype = getattr(torch, spec.get("dtype", "float32"))
    n = spec["n"]
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(2 + spec.get("repeats", 5)):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"gflops": 2 * n**3 / seconds / 1e9, "ms": 1e3 * seconds, "threads": torch.get_num_threads()}


def child_main(spec: dict, conn) -> None:
    """Entry point of a measurement process: sends ``measure(spec)`` (or the error) back."""
    try:
        result = measure(spec)
    except BaseException as error:  # noqa: BLE001 (reported to the driver)
        result = {"error": f"{type(error).__name__}: {error}"[:500]}
    conn.send(result)
    conn.close()
