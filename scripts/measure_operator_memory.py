"""Peak memory of every context operator without a seed version (OCR's, ISA's, EMANet's, ANN's and the
Hamburger's) beside the non-local operator, ours and the seed's dense one, at ``lit-seg bench``'s
operator size: features 2 x 512 x 64 x 64, float32, the CPU.

    scripts/run python scripts/measure_operator_memory.py [--size 64 64] [--output_dir results/benchmark]

Memory only, no times: each operator in training mode, one forward + backward pass (the output's
gradient drawn before) and one forward pass under ``no_grad``, measured by the cost harness's
:class:`lit_seg.study.harness.PeakMemory` (torch's CPU allocations seen through the profiler, the
peak of their running sum from the start of the pass, inputs already allocated: exact and
deterministic, so it may be measured on a busy machine). Each measurement runs in a fresh process;
every operator is measured twice and the two must agree. Writes ``operator_memory.csv`` and
``operator_memory.md`` into the output folder.

- ``non_local (seed)`` / ``non_local (ours)``: embedded Gaussian, C' = C/2, as ``lit-seg bench``'s
  ``non_local`` (the seed's builds the N x N matrix, ours never does).
- ``isa``: :class:`InterlacedSparseAttention`, key C/2, 8 x 8 blocks (``ISAHead``'s).
- ``ocr``: :class:`SpatialGather` + :class:`ObjectAttention` (key C/2, fusion conv included) on 19
  region logits that require a gradient (OCRHead's object context, its first stage excluded).
- ``ema``: :class:`ExpectationMaximizationAttention` (K = 64, 3 stages, with its convs).
- ``nmf``: :class:`NMF2d` (R = 64, 6 steps, one-step gradient); ``hamburger``: :class:`Hamburger`
  (that NMF, both convs, GroupNorm).
- ``apnb_attention``: :class:`PyramidKeyAttention` as APNB's (d = C/2, pools 1, 3, 6, 8, query and
  key sharing a projection); ``apnb``: :class:`AsymmetricPyramid`; ``afnb``:
  :class:`AsymmetricFusion` (low = high = x).
"""

import argparse
import csv
import datetime
import multiprocessing as mp
import subprocess
from pathlib import Path

MIB = 2**20
NUM_REGIONS = 19
NAMES = ["non_local (seed)", "non_local (ours)", "isa", "ocr", "ema", "nmf", "hamburger", "apnb_attention", "apnb",
         "afnb"]


def build(name: str, channels: int):
    """(the operator as a callable of the inputs, the module holding its parameters)."""
    import torch

    from lit_seg.models.attention import (
        AsymmetricFusion,
        AsymmetricPyramid,
        ExpectationMaximizationAttention,
        Hamburger,
        InterlacedSparseAttention,
        NMF2d,
        ObjectAttention,
        PyramidKeyAttention,
        SpatialGather,
    )
    from lit_seg.study import harness, seed_ops

    torch.manual_seed(0)
    key = channels // 2
    if name == "ocr":
        attention, gather = ObjectAttention(channels, key_channels=key), SpatialGather()
        return (lambda x, logits: attention(x, gather(x, logits))), harness.nonzero_scales(attention)
    modules = {
        "non_local (seed)": lambda: harness.SEED_OPERATORS["non_local"](channels),
        "non_local (ours)": lambda: seed_ops.ours_from_seed(harness.SEED_OPERATORS["non_local"](channels)),
        "isa": lambda: InterlacedSparseAttention(channels, key_channels=key),
        "ema": lambda: ExpectationMaximizationAttention(channels),
        "nmf": lambda: NMF2d(channels),
        "hamburger": lambda: Hamburger(channels),
        "apnb_attention": lambda: PyramidKeyAttention(channels, channels, channels, key_channels=key,
                                                      share_key_query=True),
        "apnb": lambda: AsymmetricPyramid(channels, key_channels=key),
        "afnb": lambda: AsymmetricFusion(channels, channels, key_channels=key),
    }
    # Zero-initialised scales (the non-local's W norm, ANN's output convs) set off zero: a real block.
    module = harness.nonzero_scales(modules[name]())
    two_maps = name in ("apnb_attention", "afnb")
    return (lambda x: module(x, x)) if two_maps else module, module


def measure(name: str, channels: int, size: tuple[int, int], batch: int, conn) -> None:
    import torch

    from lit_seg.study.harness import PeakMemory

    torch.set_flush_denormal(True)
    operator, module = build(name, channels)
    module.train()
    inputs = [torch.randn(batch, channels, *size, requires_grad=True)]
    if name == "ocr":
        inputs.append(torch.randn(batch, NUM_REGIONS, *size, requires_grad=True))
    with torch.no_grad():
        grad = torch.randn_like(operator(*inputs))
    device = torch.device("cpu")
    with PeakMemory(device) as fwdbwd:
        operator(*inputs).backward(grad)
    with torch.no_grad(), PeakMemory(device) as fwd:
        operator(*inputs)
    conn.send((sum(p.numel() for p in module.parameters()), fwdbwd.peak, fwd.peak))
    conn.close()


def measured_twice(ctx, name: str, channels: int, size: tuple[int, int], batch: int) -> tuple[int, float, float]:
    results = []
    for _ in range(2):
        receiver, sender = ctx.Pipe(duplex=False)
        process = ctx.Process(target=measure, args=(name, channels, size, batch, sender))
        process.start()
        sender.close()
        results.append(receiver.recv())
        process.join()
    if results[0] != results[1]:
        raise SystemExit(f"{name}: two measurements differ: {results}")
    return results[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--size", type=int, nargs=2, default=[64, 64], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--output_dir", type=Path, default=Path("results/benchmark"))
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for name in NAMES:
        params, fwdbwd, fwd = measured_twice(ctx, name, args.channels, tuple(args.size), args.batch)
        rows.append({"operator": name, "params": params, "peak_mib_fwdbwd": round(fwdbwd / MIB, 1),
                     "peak_mib_fwd": round(fwd / MIB, 1)})
        print(f"{name}: {rows[-1]}", flush=True)
    ours = next(r for r in rows if r["operator"] == "non_local (ours)")["peak_mib_fwdbwd"]
    dense = next(r for r in rows if r["operator"] == "non_local (seed)")["peak_mib_fwdbwd"]
    for row in rows:
        row["vs_non_local_ours"] = round(row["peak_mib_fwdbwd"] / ours, 2)
        row["vs_non_local_seed"] = round(row["peak_mib_fwdbwd"] / dense, 2)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with (args.output_dir / "operator_memory.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    from lit_seg.api.environment import cpu_summary

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = ["# Peak memory of the operators without a seed version, against non-local\n",
             f"`scripts/run python scripts/measure_operator_memory.py` ({datetime.date.today()}, commit {commit}, "
             f"{cpu_summary()}): features {args.batch}x{args.channels}x{args.size[0]}x"
             f"{args.size[1]}, float32, CPU; torch's allocator (deterministic, measured twice and equal).\n",
             "| operator | params | peak MiB fwd+bwd | peak MiB fwd | fwd+bwd vs non-local (ours) "
             "| vs non-local (seed) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['operator']} | {r['params']:,} | {r['peak_mib_fwdbwd']} | {r['peak_mib_fwd']} | "
              f"{r['vs_non_local_ours']}x | {r['vs_non_local_seed']}x |" for r in rows]
    (args.output_dir / "operator_memory.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output_dir / 'operator_memory.csv'} and .md")


if __name__ == "__main__":
    main()
