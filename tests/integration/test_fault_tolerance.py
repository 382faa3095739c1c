"""Runs that go wrong keep what they had: a NaN loss, a full disk, a kill -9 during a checkpoint
write; and the pieces resuming rests on (lit_seg/train/fault_tolerance.py, lit_seg/data/loader.py)."""

import csv
import re
import subprocess
import sys
import time
import warnings

import pytest
import torch

from lit_seg.data import SyntheticDataModule
from lit_seg.data.loader import ResumableLoader
from lit_seg.errors import RunError
from lit_seg.train.fault_tolerance import CheckpointWriteError, ResumableCSVLogger
from tests.conftest import ROOT
from tests.fault_hooks import DiskFullAfter
from tests.fault_runs import run_folder


def _load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def test_nan_loss_stops_the_run_naming_the_step_and_the_last_good_checkpoint(fault_runs):
    done, cwd = fault_runs["nan"], fault_runs["cwd"]
    folder = run_folder(cwd, "nan")
    last = folder.relative_to(cwd) / "checkpoints" / "last.ckpt"
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith(
        f"lit-seg: error: non-finite loss (nan) at step 4 (epoch 1, batch 1); stopped before applying it, nothing "
        f"saved over the checkpoints; last good checkpoint: {last}. Lower the learning rate")
    checkpoint = _load(cwd / last)  # the end of epoch 0, not the NaN weights
    assert checkpoint["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())


def test_full_disk_stops_the_run_and_keeps_the_previous_checkpoint(fault_runs):
    done, cwd = fault_runs["full"], fault_runs["cwd"]
    folder = run_folder(cwd, "full")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    # The third write fails: last.ckpt, or a new best-*.ckpt first when the second validation improved.
    assert re.search(rf"lit-seg: error: could not write checkpoint {re.escape(str(folder.relative_to(cwd)))}"
                     rf"/checkpoints/"
                     rf"(last|best-step\d+)\.ckpt: No space left on device; the previous checkpoint there is intact",
                     done.stderr), done.stderr[-2000:]
    assert _load(folder / "checkpoints" / "last.ckpt")["global_step"] == 3
    assert not list((folder / "checkpoints").glob("*.tmp"))


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    io = DiskFullAfter(writes=1)
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    with pytest.raises(CheckpointWriteError, match="No space left on device; the previous checkpoint there is intact"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    assert _load(path)["step"] == 1 and sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    assert issubclass(CheckpointWriteError, RunError)  # the CLI says it in one line, exit status 1


WRITER = """
import sys, torch
from lit_seg.train.fault_tolerance import AtomicCheckpointIO
io, path = AtomicCheckpointIO(), sys.argv[1]
for step in range(10**6):
    io.save_checkpoint({"step": step, "w": torch.full((2_000_000,), float(step))}, path)
    print(step, flush=True)
"""


def test_kill_9_while_writing_leaves_the_last_checkpoint_whole(tmp_path):
    path = tmp_path / "last.ckpt"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        for _ in range(3):  # a few 8 MB checkpoints written; the writer is in the middle of another one
            writer.stdout.readline()
        time.sleep(0.05)
    finally:
        writer.kill()
        writer.wait()
    checkpoint = _load(path)
    assert checkpoint["w"].shape == (2_000_000,) and (checkpoint["w"] == checkpoint["step"]).all()


def test_csv_logger_keeps_the_rows_of_the_run_it_resumes(tmp_path):
    first = ResumableCSVLogger(tmp_path, name="exp", version="run")
    for step, loss in enumerate([1.0, 0.8, 0.6, 0.5]):
        first.log_metrics({"train/loss": loss}, step=step)
    first.log_metrics({"val/mIoU": 0.3}, step=1)
    first.save()
    # Resumed from a checkpoint of step 2: rows of steps 2 and 3 (written after it) are replaced.
    second = ResumableCSVLogger(tmp_path, name="exp", version="run")
    second.log_metrics({"train/loss": 0.61, "lr": 0.1}, step=2)
    second.save()
    with open(tmp_path / "exp" / "run" / "metrics.csv", newline="") as file:
        rows = [{k: v for k, v in row.items() if v} for row in csv.DictReader(file)]
    assert rows == [{"step": "0", "train/loss": "1.0"}, {"step": "1", "train/loss": "0.8"},
                    {"step": "1", "val/mIoU": "0.3"}, {"step": "2", "train/loss": "0.61", "lr": "0.1"}]


def test_loader_resumes_mid_epoch_with_the_same_batches():
    data = SyntheticDataModule(task="global", image_size=(32, 32), train_size=12, batch_size=2, num_workers=0)

    def epoch(loader, epoch_index):
        loader.sampler.set_epoch(epoch_index)
        return [masks for _, masks in loader]

    whole = epoch(data.train_dataloader(), 1)
    interrupted = data.train_dataloader()
    interrupted.sampler.set_epoch(1)
    iterator = iter(interrupted)
    seen = [next(iterator)[1] for _ in range(2)]
    state = interrupted.state_dict()
    assert state == {"epoch": 1, "batches": 2}
    resumed = data.train_dataloader()
    assert isinstance(resumed, ResumableLoader)
    resumed.load_state_dict(state)
    rest = epoch(resumed, 1)
    assert len(whole) == 6 and all(torch.equal(a, b) for a, b in zip(whole, seen + rest))
    assert resumed.state_dict() == {"epoch": 1, "batches": 6}
    # The next epoch starts from its first batch, in another order.
    following = epoch(resumed, 2)
    assert len(following) == 6 and not all(torch.equal(a, b) for a, b in zip(whole, following))


def test_nan_loss_message_names_unlabelled_masks_not_the_learning_rate():
    from types import SimpleNamespace

    from lit_seg.train.fault_tolerance import NonFiniteLossError, StopOnNonFiniteLoss

    trainer = SimpleNamespace(world_size=1, checkpoint_callback=None, global_step=7, current_epoch=1,
                              fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_idx=2)))
    module = SimpleNamespace(ignore_index=255)
    guard = StopOnNonFiniteLoss()
    images = torch.zeros(2, 3, 4, 4)
    guard.on_train_batch_start(trainer, module, (images, torch.full((2, 4, 4), 255)), 2)
    with pytest.raises(NonFiniteLossError) as caught:
        guard.on_before_backward(trainer, module, torch.tensor(float("nan")))
    message = str(caught.value)
    assert "no labelled pixel (every mask value is the ignore index 255)" in message
    assert "Lower the learning rate" not in message and "not the learning rate" in message
    guard.on_train_batch_start(trainer, module, (images, torch.zeros(2, 4, 4, dtype=torch.long)), 2)
    with pytest.raises(NonFiniteLossError, match="Lower the learning rate"):
        guard.on_before_backward(trainer, module, torch.tensor(float("inf")))


@pytest.mark.slow
def test_training_images_without_labelled_pixels_add_zero_loss_not_nan(tmp_path):
    from tests.cli_fork import run_many
    from tests.conftest import EXPERIMENTS
    from tests.fixtures import write_folder

    # Every training mask all ignore (255): the worst case of a partly annotated data set.
    root = write_folder(tmp_path / "data", values=(255,), size=(64, 64))
    write_folder(tmp_path / "labelled", size=(64, 64))
    for split in ("val",):  # validation has labels, so the run reports a metric
        for name in ("a.png", "b.png"):
            (root / "masks" / split / name).write_bytes((tmp_path / "labelled" / "masks" / split / name).read_bytes())
    (done,) = run_many([(["fit", "--config", str(EXPERIMENTS / "fcn.yaml"),
                          "--data", "lit_seg.data.SegmentationDataModule",
                          "--data.init_args.dataset", "folder", "--data.init_args.root", str(root),
                          "--data.init_args.crop_size", "[64,64]", "--data.init_args.batch_size", "2",
                          "--data.init_args.num_workers", "0", "--trainer.max_epochs", "2",
                          "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false"],
                         tmp_path, {"WANDB_MODE": "disabled"})], timeout=240)
    assert done.returncode == 0 and "non-finite" not in done.stderr, done.stderr[-3000:]
    (folder,) = (tmp_path / "runs" / "fcn").iterdir()
    with (folder / "metrics.csv").open(newline="") as file:
        losses = [float(row["train/loss"]) for row in csv.DictReader(file) if row.get("train/loss")]
    assert losses == [0.0, 0.0]
