"""Peak memory of the context operators that have no seed version (EMANet's EMA unit, ANN's blocks,
the Hamburger's NMF) beside the non-local operator (ours and the seed's dense one), at ``lit-seg
bench``'s default size: C = 512, 64 x 64, batch 2, float32, the CPU.

    python scripts/measure_operator_memory.py [--channels 512] [--size 64 64] [--batch 2]

Memory only, no times: each operator in training mode, one forward + backward (output gradient
drawn before) and one forward under ``no_grad``, measured by the cost harness's
:class:`lit_seg.study.harness.PeakMemory` (torch's CPU allocator seen through the profiler: exact
and deterministic, whatever else runs on the machine). Each measurement runs in a fresh process
(the harness's fork server); every operator is measured twice and the two must agree.
"""

import argparse
import multiprocessing as mp

MIB = 2**20
# What is measured, in the table's order (each built by build()).
NAMES = [
    "non_local (seed, dense N x N)",
    "non_local (ours)",
    "ExpectationMaximizationAttention (K=64, 3 stages)",
    "NMF2d (R=64, 6 steps, one-step gradient)",
    "Hamburger (NMF R=64, GroupNorm)",
    "PyramidKeyAttention (APNB's, d=C/2, pools 1,3,6,8)",
    "AsymmetricPyramid (APNB)",
    "AsymmetricFusion (AFNB, low = high = x)",
]


def build(name: str, channels: int):
    import torch

    from lit_seg.models.attention import (
        AsymmetricFusion,
        AsymmetricPyramid,
        ExpectationMaximizationAttention,
        Hamburger,
        NMF2d,
        PyramidKeyAttention,
    )
    from lit_seg.study import harness, seed_ops

    torch.manual_seed(0)
    key = channels // 2  # ANN's project_channels at the recipe's width (256 of 512)
    builders = {
        "non_local (seed, dense N x N)": lambda: harness.nonzero_scales(harness.SEED_OPERATORS["non_local"](channels)),
        "non_local (ours)": lambda: seed_ops.ours_from_seed(
            harness.nonzero_scales(harness.SEED_OPERATORS["non_local"](channels))),
        "ExpectationMaximizationAttention (K=64, 3 stages)": lambda: ExpectationMaximizationAttention(channels),
        "NMF2d (R=64, 6 steps, one-step gradient)": lambda: NMF2d(channels),
        "Hamburger (NMF R=64, GroupNorm)": lambda: Hamburger(channels),
        "PyramidKeyAttention (APNB's, d=C/2, pools 1,3,6,8)": lambda: PyramidKeyAttention(
            channels, channels, channels, key_channels=key, share_key_query=True),
        "AsymmetricPyramid (APNB)": lambda: AsymmetricPyramid(channels, key_channels=key),
        "AsymmetricFusion (AFNB, low = high = x)": lambda: AsymmetricFusion(channels, channels, key_channels=key),
    }
    return harness.nonzero_scales(builders[name]())


def measure(name: str, channels: int, size: tuple[int, int], batch: int) -> tuple[float, float]:
    import torch

    from lit_seg.models.attention import AsymmetricFusion, PyramidKeyAttention
    from lit_seg.study.harness import PeakMemory

    torch.set_flush_denormal(True)
    module = build(name, channels).train()
    x = torch.randn(batch, channels, *size, requires_grad=True)
    two_inputs = isinstance(module, (AsymmetricFusion, PyramidKeyAttention))

    def forward():
        return module(x, x) if two_inputs else module(x)

    grad = torch.randn(batch, channels, *size)
    device = torch.device("cpu")
    with PeakMemory(device) as fwdbwd:
        forward().backward(grad)
    with torch.no_grad(), PeakMemory(device) as fwd:
        forward()
    return fwdbwd.peak, fwd.peak


def _child(name, channels, size, batch, queue) -> None:
    queue.put(measure(name, channels, size, batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--size", type=int, nargs=2, default=[64, 64])
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["lit_seg.study.harness", "lit_seg.models.attention"])
    print(f"C={args.channels}, {args.size[0]}x{args.size[1]}, batch {args.batch}, float32, CPU; "
          "peak MiB of torch's allocator (PeakMemory)")
    print("| operator | peak MiB fwd+bwd | peak MiB fwd (no_grad) |")
    print("|---|---|---|")
    for name in NAMES:
        results = []
        for _ in range(2):
            queue = ctx.Queue()
            process = ctx.Process(target=_child, args=(name, args.channels, tuple(args.size), args.batch, queue))
            process.start()
            results.append(queue.get())
            process.join()
        if results[0] != results[1]:
            raise SystemExit(f"{name}: two measurements differ: {results}")
        fwdbwd, fwd = results[0]
        print(f"| {name} | {fwdbwd / MIB:.1f} | {fwd / MIB:.1f} |", flush=True)


if __name__ == "__main__":
    main()
