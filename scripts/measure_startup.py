"""Start-up of `lit-seg fit` to its first training step, broken down (run it on a quiet machine).

    python scripts/measure_startup.py [--config experiments/ccnet_r2.yaml] [--repeats 3]

Each repeat is a fresh process (imports are the largest part and are cached by the OS only).
It prints, per phase, the median of the repeats: imports (torch, Lightning, W&B, lit_seg),
CLI parse + instantiate (model build; W&B's init too, which the config saver's setup triggers
before any other callback's), fit start (the callbacks' on_fit_start), the sanity validation (if
the config has one) and the time to the first training step.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
marks = {}
import torch, lightning.pytorch  # noqa: E401
marks["import torch + lightning"] = time.perf_counter()
import wandb  # noqa: F401
marks["import wandb"] = time.perf_counter()
import lit_seg.cli.command as cli
marks["import lit_seg"] = time.perf_counter()

import lightning.pytorch as pl
from lightning.pytorch.loggers import WandbLogger


class Probe(pl.Callback):
    def setup(self, trainer, pl_module, stage):
        for lg in trainer.loggers:  # already started by the config saver; kept in this phase if not
            if isinstance(lg, WandbLogger):
                lg.experiment
        marks.setdefault("CLI parse + model build + W&B init", time.perf_counter())
    def on_fit_start(self, trainer, pl_module):
        marks["fit start (callbacks)"] = time.perf_counter()
    def on_sanity_check_end(self, trainer, pl_module):
        marks["sanity validation (2 batches)"] = time.perf_counter()
    def on_train_batch_end(self, trainer, pl_module, *args):
        marks["first training step"] = time.perf_counter()
        out = {}
        last = t0
        for name, t in marks.items():
            out[name] = t - last
            last = t
        out["total"] = last - t0
        print("@@" + json.dumps(out), flush=True)
        raise SystemExit(0)

orig = cli.LitSegCLI.before_instantiate_classes
def hooked(self):
    orig(self)
    config = self.config[self.subcommand]
    config.trainer.callbacks = (config.trainer.callbacks or []) + [
        type(config.trainer.callbacks[0])(class_path="__main__.Probe")] if config.trainer.callbacks else []
cli.LitSegCLI.before_instantiate_classes = hooked
sys.modules["__main__"].Probe = Probe
# The shipped configuration, as `lit-seg fit --config <experiment>` runs it (sanity validation
# included); only the progress bar is off, so that the output can be read.
sys.argv = ["lit-seg", "fit", "--config", sys.argv[1], "--trainer.enable_progress_bar", "false"]
cli.main()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "experiments" / "ccnet_r2.yaml"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = []
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"), "WANDB_SILENT": "true",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cwd:
            done = subprocess.run([sys.executable, "-c", CHILD, args.config], cwd=cwd, env=env, capture_output=True,
                                  text=True, timeout=600)
        line = next((x for x in done.stdout.splitlines() if x.startswith("@@")), None)
        if line is None:
            sys.exit(f"measure_startup: the run failed:\n{done.stderr[-3000:]}")
        runs.append(json.loads(line[2:]))
    for name in runs[0]:
        values = [r[name] for r in runs]
        print(f"{name:<48} {statistics.median(values):6.2f} s   (runs: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
