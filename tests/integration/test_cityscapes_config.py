"""experiments/cityscapes/: the mmseg recipe resolves, reuses each built-in experiment's head file,
inherits nothing from the built-in recipe, and trains a step on a tiny Cityscapes fixture."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lit_seg.api.config import expand_bases, merged_config
from tests.conftest import EXPERIMENTS
from tests.fixtures import write_cityscapes

CITYSCAPES = EXPERIMENTS / "cityscapes"
OVERRIDES = {"base.yaml", "schedule_80k.yaml", "eval_msflip.yaml"}
HEAD_FILES = sorted(p.name for p in CITYSCAPES.glob("*.yaml") if p.name not in OVERRIDES)


def test_every_synthetic_experiment_has_a_cityscapes_twin_with_the_same_head_file():
    synthetic = sorted(p.name for p in EXPERIMENTS.glob("*.yaml") if p.name != "base.yaml")
    assert set(synthetic) <= set(HEAD_FILES)
    for name in synthetic:
        head_file = (EXPERIMENTS / "heads" / name).resolve()
        for experiment in (CITYSCAPES / name, EXPERIMENTS / name):
            assert head_file in [Path(p).resolve() for p in expand_bases(experiment) if "\n" not in p], experiment
        ours, theirs = merged_config(CITYSCAPES / name)["model"], merged_config(EXPERIMENTS / name)["model"]
        assert ours["head"]["class_path"] == theirs["head"]["class_path"], name
        assert bool(ours.get("encoder_gc_stages")) == bool(theirs.get("encoder_gc_stages")), name


def test_only_ocr_replaces_the_auxiliary_head_by_its_own_first_stage():
    """mmseg's OCRNet has no auxiliary head: its first stage (stage 3, loss weight 0.4) takes that place."""
    for name in HEAD_FILES:
        model = merged_config(CITYSCAPES / name)["model"]
        assert model["aux_weight"] == (0.0 if name == "ocr.yaml" else 0.4), name
    head = merged_config(CITYSCAPES / "ocr.yaml")["model"]["head"]["init_args"]
    assert (head["in_index"], head["regions_weight"]) == ([-2, -1], 0.4)  # regions from stage 3, context on 4


def test_a_cityscapes_experiment_is_a_few_lines():
    for name in HEAD_FILES:
        lines = [ln for ln in (CITYSCAPES / name).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        assert len(lines) <= 3, name


@pytest.mark.parametrize("name", HEAD_FILES)
def test_cityscapes_experiments_inherit_nothing_synthetic(name):
    parts = [Path(p).resolve() for p in expand_bases(CITYSCAPES / name) if "\n" not in p]
    built_in = [Path(p).resolve() for p in expand_bases(EXPERIMENTS / "base.yaml") if "\n" not in p]
    shared = {(EXPERIMENTS / "_base_" / "runtime.yaml").resolve()}
    assert not (set(parts) & set(built_in)) - shared  # only the runtime piece is shared
    assert (EXPERIMENTS / "base.yaml").resolve() not in parts
    config = merged_config(CITYSCAPES / name)
    assert config["data"]["class_path"] == "lit_seg.data.SegmentationDataModule"
    assert config["model"]["encoder_name"] == "resnet50" and config["model"]["encoder_depth"] == 5
    assert config["model"]["optimizer"]["init_args"]["lr"] == 0.01
    assert config["model"]["head"]["init_args"]["channels"] == 512
    assert config["experiment"] == f"cityscapes_{name[:-5]}"


def lit_seg(*args, cwd):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "lit_seg", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_print_config_resolves_without_the_data(tmp_path):
    done = lit_seg("fit", "--config", str(CITYSCAPES / "ccnet_r2.yaml"), "--config",
                   str(CITYSCAPES / "schedule_80k.yaml"), "--print_config", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    config = yaml.safe_load(done.stdout)
    assert config["trainer"]["max_steps"] == 80000 and config["trainer"]["sync_batchnorm"] is True
    assert config["model"]["head"]["init_args"]["recurrence"] == 2
    assert config["data"]["init_args"]["root"] == "data/cityscapes"
    assert not (tmp_path / "data").exists()


def test_one_step_fit_and_validation_on_a_tiny_cityscapes_root(tmp_path):
    root = write_cityscapes(tmp_path / "cityscapes")
    done = lit_seg(
        "fit", "--config", str(CITYSCAPES / "ccnet_r2.yaml"), "--model.encoder_weights", "null",
        "--data.init_args.root", str(root), "--data.init_args.crop_size", "[32, 64]",
        "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0",
        "--trainer.max_steps", "1", "--trainer.val_check_interval", "1", "--trainer.limit_val_batches", "1",
        "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
        cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "runs" / "cityscapes_ccnet_r2").iterdir()
    assert "val/mIoU" in (run / "metrics.csv").read_text().splitlines()[0]
