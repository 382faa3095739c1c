"""Multi-process evaluation: 2 CPU processes (DDP, gloo) give the same val mIoU as one process.

The Jaccard index accumulates one confusion matrix per process; torchmetrics sums them across
processes before computing, so the distributed mIoU is the single-process mIoU exactly, as long
as every image is seen once (8 val images over 2 processes: no padding by the sampler).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, TINY_FIT

SCRIPT = Path(__file__).parents[1] / "distributed_validate.py"


def validate(devices: int, tmp_path: Path) -> dict:
    out = tmp_path / f"metrics_{devices}.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("MASTER_PORT", None)
    done = subprocess.run([sys.executable, str(SCRIPT), str(devices), str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_two_processes_give_the_single_process_miou(tmp_path):
    one, two = validate(1, tmp_path), validate(2, tmp_path)
    assert one["world_size"] == 1 and two["world_size"] == 2
    # Not a degenerate model: several classes predicted and hit (the set has all 4 and ignored pixels).
    assert sum(one[f"val/IoU/{c}"] > 0 for c in range(4)) >= 2
    assert set(one) == set(two)
    for key in one:
        if key in ("world_size", "val/loss"):
            continue
        a, b = one[key], two[key]
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7), key
    # The loss is a mean of per-batch means (sync_dist): equal here as every batch has the same size.
    assert math.isclose(one["val/loss"], two["val/loss"], rel_tol=1e-5)


def test_two_process_fit_through_the_cli_with_every_callback_of_the_base(tmp_path):
    """`lit-seg fit` on 2 CPU processes (DDP, gloo) with base.yaml's loggers and callbacks: it ends
    (no callback waits on a collective from rank zero only), in one run folder with its summary."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
           "WANDB_SILENT": "true"}
    env.pop("MASTER_PORT", None)
    args = ["--config", str(ROOT / "experiments" / "ccnet_r2.yaml"), "--trainer.accelerator", "cpu",
            "--trainer.devices", "2", "--trainer.strategy", "ddp", *TINY_FIT]
    done = subprocess.run([sys.executable, "-m", "lit_seg", "fit", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (tmp_path / "runs" / "ccnet_r2").iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    # 48 images over 2 processes: one batch of 16 per process and epoch, 2 epochs.
    assert summary["global_step"] == 2 and 0.0 <= summary["val/mIoU_best"] <= 1.0
    assert (folder / "checkpoints" / "last.ckpt").is_file()
    assert any((folder / "attention").iterdir()) and any((folder / "predictions").iterdir())
