"""One training step of the quick-start model in fp32, channels_last and bf16 autocast (CPU);
with ``--heads``, each experiment's decode head in fp32 and bf16 autocast.

    python scripts/measure_step_formats.py [--size 160 160] [--batch 16] [--threads 1]
    python scripts/measure_step_formats.py --heads [fcn ccnet_r2 ...] [--task reach] [--threads 1]

The model is ``lit_seg.study.training_step.build_module``'s (experiments/ccnet_r2.yaml's network),
the step a bare one (zero_grad, forward, cross-entropy, backward, AdamW step) on one fixed random
batch; per format a fresh model (same seed), 3 warm-up steps, then the median of 7. The defaults are
the ``recurrence`` task's size and batch with one thread, as each run of ``lit-seg ablate --jobs 2``
has: what the task suite's cost depends on (docs/notes/history.md, "2026-12-01: bf16 on the CPU").
Run it on a quiet machine.

``--heads``: each experiment's head as ``lit-seg fit --config experiments/<name>.yaml --config
experiments/tasks/<task>.yaml`` builds it, on the encoder features of its training batch (the cost
harness's :func:`lit_seg.study.harness.experiment_head`), forward + backward in training mode,
median of 4 after one warm-up, in fp32 and under bf16 autocast: which heads bf16 makes slower (the
CPU's bf16 kernels are not fast for every op and layout). Default: every head of the head list.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lit_seg.models.heads import HEADS
from lit_seg.study.training_step import build_module, make_batch

FORMATS = ("fp32", "channels_last", "bf16")


def step_ms(fmt: str, size: tuple[int, int], batch: int, steps: int = 10, warmup: int = 3) -> float:
    module = build_module(0)
    model = module.model
    images, masks = make_batch(batch, size)
    if fmt == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for i in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fmt == "bf16"):
            logits = model(images)["out"]
        F.cross_entropy(logits.float(), masks).backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def head_ms(experiment: str, task: str, bf16: bool, steps: int = 5, warmup: int = 1) -> float:
    from lit_seg.study.harness import experiment_head

    head, features, _, _ = experiment_head(f"experiments/{experiment}.yaml",
                                           ["--config", f"experiments/tasks/{task}.yaml"])
    head.train()
    times = []
    for i in range(steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs = head([f.requires_grad_() for f in features])
        sum(o.float().mean() for o in outputs.values()).backward()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=[160, 160], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--heads", nargs="*", metavar="EXPERIMENT", help="time these experiments' heads instead")
    parser.add_argument("--task", default="reach", help="with --heads: the task overlay (its image size and batch)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.heads is not None:
        for experiment in args.heads or list(HEADS):
            fp32, bf16 = head_ms(experiment, args.task, False), head_ms(experiment, args.task, True)
            print(f"{experiment:>13}: head fwd+bwd fp32 {fp32:7.1f} ms, bf16 autocast {bf16:7.1f} ms, "
                  f"ratio {bf16 / fp32:.2f} ({args.task}, {args.threads} thread(s))", flush=True)
        return
    for fmt in FORMATS:
        ms = step_ms(fmt, tuple(args.size), args.batch)
        print(f"{fmt:>14}: {ms:6.0f} ms a step (batch {args.batch}, {args.size[0]}x{args.size[1]}, "
              f"{args.threads} thread(s))", flush=True)


if __name__ == "__main__":
    main()
