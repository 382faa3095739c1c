"""A run stopped by Ctrl-C and by SIGTERM, resumed each time with ``lit-seg fit --resume``, ends
exactly where an uninterrupted run does (the fits: tests/fault_runs.py)."""

import csv
import json
import warnings

import torch

from lit_seg.api.records import read_record
from tests.fault_runs import run_folder


def _rows(folder) -> list[dict[str, str]]:
    with (folder / "metrics.csv").open(newline="") as file:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(file)]


def test_ctrl_c_and_sigterm_stop_after_the_batch_with_a_checkpoint_and_the_resume_command(fault_runs):
    cwd = fault_runs["cwd"]
    folder = run_folder(cwd, "int").relative_to(cwd)
    for name, signal, status, step in (("int", "SIGINT", 130, 2), ("res1", "SIGTERM", 143, 4)):
        done = fault_runs[name]
        assert done.returncode == status and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert (f"lit-seg: stopped by {signal} after step {step} (epoch {step // 3}); saved {folder}/checkpoints/"
                f"last.ckpt; resume with: lit-seg fit --resume {folder}") in done.stderr
    # Lightning warns when it resumes mid-epoch with a loader it cannot resume; ours can.
    assert "not resumable" not in fault_runs["res1"].stderr and "not resumable" not in fault_runs["res2"].stderr


def test_resumed_run_ends_with_the_uninterrupted_runs_metrics(fault_runs):
    cwd = fault_runs["cwd"]
    assert fault_runs["res2"].returncode == 0, fault_runs["res2"].stderr[-3000:]
    resumed, reference = run_folder(cwd, "int"), run_folder(cwd, "ref")
    # Every logged value at every step: train/loss (same batches, same dropout masks), the LR
    # schedule, val/loss, val/mIoU and each class's IoU; the interrupted parts' rows are kept.
    rows = _rows(resumed)
    assert rows == _rows(reference)
    assert [int(r["step"]) for r in rows if "train/loss" in r] == list(range(6))
    ours, theirs = (json.loads((f / "summary.json").read_text()) for f in (resumed, reference))
    assert ours["global_step"] == theirs["global_step"] == 6 and ours["epoch"] == theirs["epoch"]
    assert ours["metrics"] == theirs["metrics"] and "val/IoU/object_red" in ours["metrics"]
    assert ours["val/mIoU_best"] == theirs["val/mIoU_best"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        last = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        other = torch.load(reference / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 6 and last["lr_schedulers"] == other["lr_schedulers"]
    assert all(torch.equal(last["state_dict"][k], other["state_dict"][k]) for k in other["state_dict"])


def test_resume_continues_the_same_folder_and_wandb_run(fault_runs):
    cwd = fault_runs["cwd"]
    (folder,) = (cwd / "runs" / "int").iterdir()  # one folder for the three parts
    run_id = folder.name.rsplit("-", 1)[1]
    parts = sorted((folder / "wandb").glob("offline-run-*"))
    # One offline directory per part, all of the same W&B run (`wandb sync` uploads them in order).
    assert len(parts) == 3 and all(p.name.endswith(f"-{run_id}") for p in parts)
    assert json.loads((folder / "summary.json").read_text())["wandb_run_id"] == run_id
    for name in ("res1", "res2"):
        assert f"lit-seg: run folder {folder.relative_to(cwd)}" in fault_runs[name].stderr
    config = (folder / "config.yaml").read_text()
    assert "resume: null" in config and "ckpt_path: null" in config  # the saved config starts a new run


def test_last_checkpoint_is_the_latest_state_not_the_best(fault_runs):
    # Lightning 2.6's ModelCheckpoint(monitor=..., save_last=True) rewrites last.ckpt only with a
    # new best; lit_seg.train.fault_tolerance.LastCheckpoint keeps it the latest state.
    folder = run_folder(fault_runs["cwd"], "ref")
    summary = json.loads((folder / "summary.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        last = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == summary["global_step"] == 6


def test_every_run_folder_holds_its_record_through_interruptions_and_failures(fault_runs):
    cwd = fault_runs["cwd"]
    record = read_record(run_folder(cwd, "int"))  # Ctrl-C, resumed, SIGTERM, resumed to the end
    assert record.status == "finished" and record.error is None
    assert [(p["status"], p["error"]) for p in record.parts] == [
        ("interrupted", "stopped by SIGINT"), ("interrupted", "stopped by SIGTERM"), ("finished", None)]
    assert record.wall_s == round(sum(p["wall_s"] for p in record.parts), 1) > 0
    summary = json.loads((run_folder(cwd, "int") / "summary.json").read_text())
    assert record.metrics["val_mIoU_final"] == round(summary["metrics"]["val/mIoU"], 5)
    assert record.metrics["steps"] == 6 and record.experiment == "int" and record.seed == 0
    reference = read_record(run_folder(cwd, "ref"))
    same = {k: v for k, v in reference.metrics.items() if k != "wandb_run_id"}
    assert len(reference.parts) == 1 and same == {k: v for k, v in record.metrics.items() if k != "wandb_run_id"}
    assert reference.config_hash != record.config_hash  # its experiment's name differs: another config
    assert reference.model_code == record.model_code and reference.code == record.code
    for name, error in (("nan", "non-finite loss (nan) at step 4"), ("full", "could not write checkpoint")):
        failed = read_record(run_folder(cwd, name))
        assert failed.status == "failed" and failed.error.startswith(error), failed.error
