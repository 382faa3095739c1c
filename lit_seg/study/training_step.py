"""Lightning's training step vs the bare loop, on the ``ccnet_r2`` experiment's model and batch.

    lit-seg bench-step
    lit-seg bench-step --steps 10 --warmup 2 --rounds 1 --batch 2 --size 32 32

The model is experiments/ccnet_r2.yaml's: ``SegmentationModule(head=partial(CCHead, channels=64,
recurrence=2), num_classes=4, encoder_name="resnet18", encoder_depth=3, aux_weight=0.0)`` with
SGD lr 0.1 (the recipe's momentum 0.9 and weight decay 5e-4) and the poly schedule stepped every
iteration; one fixed batch (16 images of 96x96 and their masks).

- bare: ``zero_grad``, forward, the module's loss, backward, ``optimizer.step()`` and
  ``scheduler.step()``, timed step by step with ``time.perf_counter``;
- Lightning: ``Trainer.fit`` on a DataLoader over a TensorDataset of that one batch repeated
  (logger, checkpointing, progress bar, model summary and validation off), each step timed by a
  callback from ``on_train_batch_start`` to ``on_train_batch_end`` (training_step with its
  logging, backward, optimiser and scheduler steps; loading the batch is outside the window,
  as it is outside the bare loop).

Both run ``--rounds`` times alternately (bare, Lightning, bare, ...) with a fresh model each
time (same seed), ``--warmup`` steps discarded each time; the medians over all timed steps and
their ratio (target: Lightning within 10% of bare, ratio <= 1.10) are printed and written to
``--out``/training_step.{csv,md}.
"""

import argparse
import csv
import datetime
import os
import statistics
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_seg.models.heads import CCHead
from lit_seg.train.module import SegmentationModule
from lit_seg.train.optim import SGD

NUM_CLASSES = 4


def build_module(seed: int = 0) -> SegmentationModule:
    torch.manual_seed(seed)
    return SegmentationModule(head=partial(CCHead, channels=64, recurrence=2), num_classes=NUM_CLASSES,
                              encoder_name="resnet18", encoder_depth=3, aux_weight=0.0,
                              optimizer=partial(SGD, lr=0.1))


def make_batch(batch: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, *size, generator=generator)
    masks = torch.randint(0, NUM_CLASSES, (batch, *size), generator=generator)
    return images, masks


def bare_steps(images: torch.Tensor, masks: torch.Tensor, steps: int) -> list[float]:
    """Seconds of each plain PyTorch step: zero_grad, forward, loss, backward, optimiser and scheduler step."""
    module = build_module()
    module.train()
    optimizer = module.optimizer_factory(module.parameters())
    scheduler = module.scheduler_factory(optimizer, steps)
    weights = module.model.loss_weights
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        losses = module.losses(module.model(images), masks)
        loss = sum(weights[name] * value for name, value in losses.items())
        loss.backward()
        optimizer.step()
        scheduler.step()
        times.append(time.perf_counter() - start)
    return times


class StepTimer(pl.Callback):
    """Seconds from ``on_train_batch_start`` to ``on_train_batch_end`` of every step."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self._start)


def lightning_steps(images: torch.Tensor, masks: torch.Tensor, steps: int) -> list[float]:
    """Seconds of each Lightning training step (Trainer.fit on the one batch repeated)."""
    dataset = TensorDataset(images.repeat(steps, 1, 1, 1), masks.repeat(steps, 1, 1))
    loader = DataLoader(dataset, batch_size=images.shape[0], shuffle=False, num_workers=0)
    timer = StepTimer()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, max_epochs=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0, callbacks=[timer])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(build_module(), train_dataloaders=loader)
    if len(timer.times) != steps:
        raise RuntimeError(f"Lightning ran {len(timer.times)} steps, expected {steps}")
    return timer.times


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="lit-seg bench-step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round and loop")
    parser.add_argument("--warmup", type=int, default=5, help="discarded steps at the start of each round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating bare / Lightning rounds")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, nargs=2, default=[96, 96], metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--output_dir", type=Path, default=Path("results/benchmark"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pl.seed_everything(0, verbose=False)
    images, masks = make_batch(args.batch, tuple(args.size))
    total = args.warmup + args.steps
    bare, light, rows = [], [], []
    loads = []
    for round_index in range(args.rounds):
        for loop, fn, store in (("bare", bare_steps, bare), ("lightning", lightning_steps, light)):
            loads.append(os.getloadavg()[0])
            times = fn(images, masks, total)[args.warmup:]
            store += times
            median = statistics.median(times)
            rows.append({"round": round_index, "loop": loop, "steps": len(times), "median_ms": round(1e3 * median, 2),
                         "min_ms": round(1e3 * min(times), 2), "max_ms": round(1e3 * max(times), 2),
                         "load1": round(loads[-1], 2)})
            print(f"round {round_index} {loop:9}: median {1e3 * median:7.1f} ms over {len(times)} steps "
                  f"(min {1e3 * min(times):.1f}, max {1e3 * max(times):.1f}; load {loads[-1]:.2f})", flush=True)
    bare_ms, light_ms = 1e3 * statistics.median(bare), 1e3 * statistics.median(light)
    ratio = light_ms / bare_ms
    summary = {"bare_ms": round(bare_ms, 2), "lightning_ms": round(light_ms, 2), "ratio": round(ratio, 4),
               "within_10_percent": ratio <= 1.10}
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with (args.output_dir / "training_step.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        f.write(f"# all rounds: bare {bare_ms:.2f} ms, lightning {light_ms:.2f} ms, ratio {ratio:.4f}\n")
    lines = [
        "# Training step: Lightning vs bare PyTorch (ccnet_r2 model)",
        "",
        f"- command: `lit-seg bench-step {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}; torch {torch.__version__}, "
        f"lightning {pl.__version__}; {torch.get_num_threads()} threads; 1-min load {min(loads):.2f}–{max(loads):.2f}",
        f"- model: resnet18 (depth 3) + CCHead(channels 64, R=2), {NUM_CLASSES} classes; batch {args.batch} at "
        f"{args.size[0]}×{args.size[1]}; SGD lr 0.1 (momentum 0.9, wd 5e-4), poly schedule per step",
        f"- {args.rounds} alternating round(s) of {args.steps} timed steps each after {args.warmup} warm-up steps",
        "",
        "| loop | round | median ms | min ms | max ms |",
        "|---|---|---|---|---|",
        *[f"| {r['loop']} | {r['round']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['max_ms']:.1f} |"
          for r in rows],
        "",
        f"**Median over all rounds: bare {bare_ms:.1f} ms, Lightning {light_ms:.1f} ms per step; "
        f"Lightning / bare = {ratio:.3f} ({100 * (ratio - 1):+.1f}%; target ≤ 1.10: "
        f"{'met' if ratio <= 1.10 else 'not met'}).**",
    ]
    (args.output_dir / "training_step.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


if __name__ == "__main__":
    main()
