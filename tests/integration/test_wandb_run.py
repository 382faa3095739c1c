"""What one W&B run holds, read back from the offline run of the shared short fit (`ccnet_run`).

The run is read with `wandb leet inspect` (W&B's own reader of the .wandb transaction log):
``--summary --json`` gives one object (state, config, summary), ``--json`` every record (run,
history, artifacts) one per line. Media and tables lie under the offline run's ``files/``.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import WandbLogger
from PIL import Image

from lit_seg.api.config import expand_argv
from lit_seg.api.parser import LitSegCLI
from tests.conftest import EXPERIMENTS

CLASSES = ["background", "object_red", "object_green", "object_blue"]


def leet(*args: str) -> str:
    wandb = Path(sys.executable).with_name("wandb")
    done = subprocess.run([str(wandb), "leet", "inspect", *args], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def offline_run(ccnet_run) -> dict:
    (run_dir,) = (ccnet_run / "wandb").glob("offline-run-*")
    records = [json.loads(line) for line in leet("--json", str(run_dir)).splitlines() if line.strip()]
    config = {}  # every config record's update, W&B's own keys (_wandb) included
    for record in records:
        if record["type"] == "config":
            config.update(record["config"]["update"])
    return {"folder": ccnet_run, "dir": run_dir, "summary": json.loads(leet("--summary", "--json", str(run_dir))),
            "records": records, "config": config,
            "history": [r["history"]["item"] for r in records if r["type"] == "history"]}


def test_run_is_named_grouped_tagged_and_finished(offline_run):
    (run,) = [r["run"] for r in offline_run["records"] if r["type"] == "run"]
    summary_json = json.loads((offline_run["folder"] / "summary.json").read_text())
    assert run["run_id"] == summary_json["wandb_run_id"] and offline_run["folder"].name.endswith(run["run_id"])
    assert run["display_name"] == "ccnet_r2-seed0" and run["project"] == "lit-seg"
    assert run["run_group"] == "synthetic" == summary_json["group"]
    assert run["tags"] == ["ccnet_r2", "CCHead"]
    assert offline_run["summary"]["state"] == "finished" and offline_run["summary"]["exit_code"] == 0


def test_run_holds_the_resolved_config(offline_run):
    config = offline_run["summary"]["config"]
    assert config["experiment"] == "ccnet_r2" and config["seed_everything"] == 0
    assert config["model.head.class_path"] == "lit_seg.models.heads.CCHead"
    assert config["model.head.init_args.recurrence"] == 2
    assert config["model.optimizer.init_args.eps"] == 1e-8  # defaults too, not only what the YAML states
    assert config["trainer.max_epochs"] == 2


def test_run_holds_losses_and_metrics_every_validation(offline_run):
    history = offline_run["history"]
    train = [h for h in history if "train/loss" in h]
    val = [h for h in history if "val/mIoU" in h]
    assert len(train) == 6 and len(val) == 2  # log_every_n_steps 1 over 2 x 3 steps; 2 validations
    for row in val:
        assert 0.0 <= row["val/mIoU"] <= 1.0 and 0.0 <= row["val/pixel_acc"] <= 1.0
        assert {f"val/IoU/{name}" for name in CLASSES} <= set(row)


def test_per_class_iou_is_a_table_after_each_validation(offline_run):
    tables = [h for h in offline_run["history"] if h.get("val/IoU_table._type") == "table-file"]
    assert [t["trainer/global_step"] for t in tables] == [3, 6]
    table = json.loads((offline_run["dir"] / "files" / tables[-1]["val/IoU_table.path"]).read_text())
    assert table["columns"] == ["epoch", "step", "class", "IoU"]
    assert [row[2] for row in table["data"]] == CLASSES and {row[:2] == [1, 6] for row in table["data"]} == {True}
    scalars = offline_run["summary"]["summary"]
    for _, _, name, iou in table["data"]:
        assert iou == pytest.approx(scalars[f"val/IoU/{name}"])


def test_prediction_overlays_have_ground_truth_and_prediction_masks_named_by_class(offline_run):
    logged = [h for h in offline_run["history"] if h.get("val/predictions._type") == "images/separated"]
    assert len(logged) == 2  # once per validation
    for row in logged:
        assert row["val/predictions.count"] == 2 and row["val/predictions.width"] == 64
        assert row["val/predictions.captions"][0].startswith("val image 0, epoch ")
        for masks in row["val/predictions.all_masks"]:
            assert set(masks) == {"ground_truth", "prediction"}
            for mask in masks.values():
                with Image.open(offline_run["dir"] / "files" / mask["path"]) as picture:
                    assert picture.size == (64, 64)
    labels = offline_run["config"]["_wandb"]["mask/class_labels"]
    for kind in ("ground_truth", "prediction"):
        names = labels[f"val/predictions_wandb_delimeter_{kind}"]["value"]
        assert names == {**{str(i): name for i, name in enumerate(CLASSES)}, "255": "ignore"}


def test_attention_maps_and_summary_numbers(offline_run):
    summary = offline_run["summary"]["summary"]
    assert summary["val/attention"]["_type"] == "images/separated" and summary["val/attention"]["count"] == 2
    saved = json.loads((offline_run["folder"] / "summary.json").read_text())
    assert summary["head_params"] == saved["head_params"] > 0 and summary["params"] == saved["params"]
    assert summary["head_gflops"] == pytest.approx(saved["head_gflops"]) and saved["head_gflops"] > 0
    assert saved["head_flops_input"] == [1, 3, 64, 64]
    # Measured once at the end of training, the same in both (lit_seg.inference.query_dependence).
    assert summary["query_dependence"] == pytest.approx(saved["query_dependence"]) and 0 < saved["query_dependence"] < 1
    # W&B's own best/last summaries (define_metric), equal to what summary.json and the checkpoint saw.
    assert summary["val/mIoU"]["max"] == pytest.approx(saved["val/mIoU_best"])
    assert summary["val/mIoU"]["last"] == pytest.approx(saved["metrics"]["val/mIoU"])
    assert summary["val/loss"]["min"] <= summary["val/loss"]["last"]


def test_every_metric_comes_from_the_saved_confusion_matrix(offline_run):
    from lit_seg.train.metrics import named_scores

    saved = json.loads((offline_run["folder"] / "summary.json").read_text())
    confmat = torch.tensor(saved["confusion_matrix"])
    assert confmat.shape == (4, 4) and 0 < int(confmat.sum()) <= 16 * 64 * 64  # 16 val images, ignore left out
    expected = named_scores(confmat, CLASSES, prefix="val/")
    for key in ("val/mIoU", "val/mAcc", "val/aAcc", "val/mDice", "val/pixel_acc", "val/Acc/object_red",
                "val/Dice/background", "val/IoU/object_blue"):
        assert saved["metrics"][key] == pytest.approx(expected[key], abs=1e-6, nan_ok=True), key
    assert sorted(p.name for p in (offline_run["folder"] / "confusion").iterdir()) == ["val_epoch0.png",
                                                                                     "val_epoch1.png"]
    logged = [h for h in offline_run["history"] if h.get("val/confusion_matrix._type") == "images/separated"]
    assert len(logged) == 2


def test_offline_run_logs_no_checkpoint_artifacts(offline_run):
    artifacts = {r["artifact"]["type"] for r in offline_run["records"] if r["type"] == "artifact"}
    assert artifacts == {"run_table"}  # the IoU tables; checkpoints stay in checkpoints/ offline


def test_prediction_pngs_in_the_run_folder(offline_run):
    folder = offline_run["folder"] / "predictions"
    assert sorted(p.name for p in folder.iterdir()) == ["epoch0_0.png", "epoch0_1.png", "epoch1_0.png",
                                                         "epoch1_1.png"]
    with Image.open(folder / "epoch1_0.png") as picture:
        assert picture.mode == "RGB" and picture.width > 3 * 150  # image | ground truth | prediction


def test_count_flops_counts_cpu_attention_kernels():
    # FlopCounterMode in torch 2.14 has no formula for the CPU flash-attention kernel; lit_seg.train.flops adds it.
    import torch.nn.functional as F

    from lit_seg.train.flops import count_flops

    q, k, v = (torch.randn(1, 1, 64, 8) for _ in range(3))
    assert count_flops(F.scaled_dot_product_attention, q, k, v) == 2 * (2 * 64 * 64 * 8)  # q k^T and A v
    conv = torch.nn.Conv2d(8, 4, 1, bias=False)
    assert count_flops(conv, torch.randn(1, 8, 5, 5)) == 2 * 8 * 4 * 25


# --- settings decided at start: group, checkpoints as artifacts online ------------------------------

def _wandb_logger_args(tmp_path, monkeypatch, mode: str, *extra: str) -> dict:
    """The WandbLogger the CLI builds (no W&B run is started: the logger creates it lazily)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", mode)
    argv = expand_argv(["--config", str(EXPERIMENTS / "fcn.yaml"), "--data.init_args.num_workers", "0", *extra])
    cli = LitSegCLI(args=argv, run=False)
    (logger,) = [lg for lg in cli.trainer.loggers if isinstance(lg, WandbLogger)]
    return {"log_model": logger._log_model, "group": logger._wandb_init.get("group"), "id": logger._id}


@pytest.mark.parametrize("mode,expected", [("offline", False), ("online", True)])
def test_checkpoints_become_artifacts_only_online(tmp_path, monkeypatch, mode, expected):
    args = _wandb_logger_args(tmp_path, monkeypatch, mode, "--group", "heads_ablation")
    assert args["log_model"] is expected and args["group"] == "heads_ablation"


def test_log_model_stated_by_the_user_is_kept_online(tmp_path, monkeypatch):
    override = tmp_path / "keep_local.yaml"
    override.write_text("trainer:\n  logger:\n    - class_path: lightning.pytorch.loggers.CSVLogger\n"
                        "      init_args: {save_dir: runs}\n    - class_path: lightning.pytorch.loggers.WandbLogger\n"
                        "      init_args: {project: lit-seg, log_model: false}\n")
    assert _wandb_logger_args(tmp_path, monkeypatch, "online", "--config", str(override))["log_model"] is False

