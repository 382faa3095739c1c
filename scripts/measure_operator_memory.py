"""Peak memory of the OCR and ISA operators against the dense non-local block, at ``lit-seg bench``'s
default operator size (features B x C x H x W = 2 x 512 x 64 x 64, float32, CPU).

    scripts/run python scripts/measure_operator_memory.py [--size 64 64] [--out FILE.md]

Memory is the cost harness's (:class:`lit_seg.study.harness.PeakMemory`): torch's own CPU
allocations seen through the profiler, the peak of their running sum during the pass, counted
from the start of the pass (inputs and output gradients already allocated): exact and
deterministic, so it may be taken on a busy machine. Each operator is measured in a fresh
process: one forward + backward pass (the gradient of the output given), then one forward pass
under ``no_grad``. No timing. The operators are not in ``lit-seg bench``'s operator table,
which pairs ours with the seeds' code, and there is no seed for these two.

- ``non_local``: :class:`NonLocal2d`, embedded Gaussian, C' = C/2 (the bench's ``non_local``).
- ``isa``: :class:`InterlacedSparseAttention`, key C/2, 8 x 8 blocks (``ISAHead``'s block).
- ``ocr``: :class:`SpatialGather` + :class:`ObjectAttention` (key C/2, the fusion conv included)
  on 19 region logits that require a gradient (OCRHead's object context, first stage excluded);
  ``spatial_gather`` and ``object_attention`` alone (the latter on the 19 gathered regions).
"""

import argparse
import datetime
import multiprocessing as mp
from pathlib import Path

NUM_REGIONS = 19


def _build(name: str, channels: int):
    """(the operator as a callable, the module holding its parameters or None)."""
    import torch

    from lit_seg.models.attention import InterlacedSparseAttention, NonLocal2d, ObjectAttention, SpatialGather

    torch.manual_seed(0)
    if name == "non_local":
        block = NonLocal2d(channels)
        return block, block
    if name == "isa":
        block = InterlacedSparseAttention(channels, key_channels=channels // 2)
        return block, block
    if name == "spatial_gather":
        return SpatialGather(), None
    attention = ObjectAttention(channels, key_channels=channels // 2)
    if name == "object_attention":
        return attention, attention
    gather = SpatialGather()
    return (lambda x, logits: attention(x, gather(x, logits))), attention


def _inputs(name: str, batch: int, channels: int, size: tuple[int, int]):
    import torch

    x = torch.randn(batch, channels, *size, requires_grad=True)
    if name in ("ocr", "spatial_gather"):
        return [x, torch.randn(batch, NUM_REGIONS, *size, requires_grad=True)]
    if name == "object_attention":
        return [x, torch.randn(batch, channels, NUM_REGIONS, 1, requires_grad=True)]
    return [x]


def _measure(name: str, batch: int, channels: int, size: tuple[int, int], conn) -> None:
    import torch

    from lit_seg.study.harness import PeakMemory, nonzero_scales

    operator, params = _build(name, channels)
    if params is not None:
        nonzero_scales(params.train())  # non-local's zero-initialised W norm: a real block
    inputs = _inputs(name, batch, channels, size)
    with torch.no_grad():
        grad = torch.randn_like(operator(*inputs))
    with PeakMemory(torch.device("cpu")) as fwdbwd:
        operator(*inputs).backward(grad)
    with torch.no_grad(), PeakMemory(torch.device("cpu")) as fwd:
        operator(*inputs)
    count = sum(p.numel() for p in params.parameters()) if params is not None else 0
    conn.send({"params": count, "peak_fwd": fwd.peak, "peak_fwdbwd": fwdbwd.peak})
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--size", type=int, nargs=2, default=[64, 64], metavar=("H", "W"))
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    names = ["non_local", "isa", "ocr", "spatial_gather", "object_attention"]
    results = {}
    for name in names:
        receiver, sender = ctx.Pipe(duplex=False)
        process = ctx.Process(target=_measure, args=(name, args.batch, args.channels, tuple(args.size), sender))
        process.start()
        sender.close()
        results[name] = receiver.recv()
        process.join()
    mib = 2**20
    base = results["non_local"]
    import torch

    lines = [f"Peak memory (torch CPU allocator), features {args.batch}×{args.channels}×{args.size[0]}×{args.size[1]}, "
             f"float32, {NUM_REGIONS} regions for OCR (scripts/measure_operator_memory.py, "
             f"{datetime.date.today()}, torch {torch.__version__})", "",
             "| operator | params | peak MiB fwd | peak MiB fwd+bwd | fwd+bwd vs non_local |", "|---|---|---|---|---|"]
    for name in names:
        r = results[name]
        lines.append(f"| {name} | {r['params']:,} | {r['peak_fwd'] / mib:.1f} | {r['peak_fwdbwd'] / mib:.1f} "
                     f"| {r['peak_fwdbwd'] / base['peak_fwdbwd']:.2f}× |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
