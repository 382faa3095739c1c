"""experiments/voc/ and experiments/ade20k/: mmsegmentation's recipes for PASCAL VOC 2012 aug and ADE20K,
composed like experiments/cityscapes/ (tests/integration/test_cityscapes_config.py): they resolve, reuse
each built-in experiment's head file, inherit nothing from the built-in recipe, `check-data` reads a tiny
fixture in each official layout (and names a bad file), and one head trains a step on it; and
experiments/folder/, the recipe for your own data, with any head file."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lit_seg.api.config import expand_bases, merged_config
from lit_seg.cli import main
from lit_seg.data.datasets import ade20k, voc
from tests.conftest import EXPERIMENTS
from tests.fixtures import tiled, write_ade20k, write_folder, write_mask, write_voc

# Per data set: its dataset name, classes, crop, iterations and validation interval of the default
# schedule and of the longer one (mmseg's *_4xb4-{20k,40k}_voc12aug-512x512 and
# *_4xb4-{80k,160k}_ade20k-512x512), the overlay for the longer one, and the fixture writer.
RECIPES = {
    "voc": dict(dataset="voc", split="trainaug", schedule=(20000, 2000), longer=(40000, 4000),
                overlay="schedule_40k.yaml", write=lambda root: write_voc(root, aug=True)),
    "ade20k": dict(dataset="ade20k", split="train", schedule=(80000, 8000), longer=(160000, 16000),
                   overlay="schedule_160k.yaml", write=write_ade20k),
}
CLASS_NAMES = {"voc": voc.CLASS_NAMES, "ade20k": ade20k.CLASS_NAMES}
OVERRIDES = {"base.yaml", "schedule_40k.yaml", "schedule_160k.yaml"}


def head_files(name: str) -> list[str]:
    return sorted(p.name for p in (EXPERIMENTS / name).glob("*.yaml") if p.name not in OVERRIDES)


@pytest.mark.parametrize("name", RECIPES)
def test_every_cityscapes_experiment_has_a_twin_with_the_same_head_file(name):
    cityscapes = sorted(p.name for p in (EXPERIMENTS / "cityscapes").glob("*.yaml")
                        if p.name not in {"base.yaml", "schedule_80k.yaml", "eval_msflip.yaml"})
    assert head_files(name) == cityscapes
    for file in cityscapes:
        head_file = (EXPERIMENTS / "heads" / file).resolve()
        assert head_file in [Path(p).resolve() for p in expand_bases(EXPERIMENTS / name / file) if "\n" not in p]
        # The same model as the Cityscapes twin (ResNet-50 D8, the head at 512 channels), GC blocks included.
        ours, theirs = (merged_config(EXPERIMENTS / folder / file)["model"] for folder in (name, "cityscapes"))
        assert ours["head"] == theirs["head"] and ours.get("encoder_gc_stages") == theirs.get("encoder_gc_stages")
        text = (EXPERIMENTS / name / file).read_text()
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        assert len(lines) <= 3, file


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_is_mmsegs_and_inherits_nothing_synthetic(name):
    recipe = RECIPES[name]
    parts = [Path(p).resolve() for p in expand_bases(EXPERIMENTS / name / "ccnet_r2.yaml") if "\n" not in p]
    built_in = [Path(p).resolve() for p in expand_bases(EXPERIMENTS / "base.yaml") if "\n" not in p]
    assert not (set(parts) & set(built_in)) - {(EXPERIMENTS / "_base_" / "runtime.yaml").resolve()}
    config = merged_config(EXPERIMENTS / name / "ccnet_r2.yaml")
    data = config["data"]["init_args"]
    assert config["data"]["class_path"] == "lit_seg.data.SegmentationDataModule"
    assert data["dataset"] == recipe["dataset"]
    assert data["crop_size"] == [512, 512] and data["scale_range"] == [0.5, 2.0] and data["batch_size"] == 16
    assert data["train_split"] == recipe["split"] and data["val_split"] == "val"
    assert config["model"]["encoder_name"] == "resnet50" and config["model"]["output_stride"] == 8
    assert config["model"]["aux_weight"] == 0.4 and config["trainer"]["sync_batchnorm"] is True
    assert (config["trainer"]["max_steps"], config["trainer"]["val_check_interval"]) == recipe["schedule"]
    assert config["experiment"] == f"{name}_ccnet_r2" and config["group"] == name
    # mmseg repeats the optimizer and decay in every schedule file; here they must agree with Cityscapes'.
    cityscapes = merged_config(EXPERIMENTS / "cityscapes" / "ccnet_r2.yaml")["model"]
    assert config["model"]["optimizer"] == cityscapes["optimizer"]
    assert config["model"]["lr_scheduler"] == cityscapes["lr_scheduler"]


@pytest.mark.parametrize("name", RECIPES)
def test_print_config_with_the_longer_schedule_resolves_without_the_data(name, tmp_path, monkeypatch, capsys):
    recipe = RECIPES[name]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["lit-seg"])
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(EXPERIMENTS / name / "ccnet_r2.yaml"), "--config",
              str(EXPERIMENTS / name / recipe["overlay"]), "--print_config"])
    assert done.value.code in (0, None), capsys.readouterr().err
    config = yaml.safe_load(capsys.readouterr().out)
    assert (config["trainer"]["max_steps"], config["trainer"]["val_check_interval"]) == recipe["longer"]
    assert config["model"]["head"]["init_args"]["recurrence"] == 2
    assert config["data"]["init_args"]["root"] == f"data/{name}"
    assert config["experiment"] == f"{name}_ccnet_r2"
    assert not (tmp_path / "data").exists()


def lit_seg(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "lit_seg", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("name", RECIPES)
def test_check_data_reads_every_pair_of_the_fixture_and_names_the_bad_one(name, tmp_path):
    root = RECIPES[name]["write"](tmp_path / name)
    pairs = {"voc": 4, "ade20k": 3}[name]  # voc: 3 trainaug (SegmentationClassAug) + 1 val; ade20k: 2 + 1
    # One mask value outside the classes: VOC 21 (classes 0..20), ADE20K 151 (stored 1..150, 0 ignored).
    bad_value = {"voc": 21, "ade20k": 151}[name]
    masks = "SegmentationClassAug/*.png" if name == "voc" else "annotations/training/*.png"
    bad = sorted(root.rglob(masks))[0]
    write_mask(bad, tiled([1, bad_value]))
    done = lit_seg("check-data", "--config", str(EXPERIMENTS / name / "ccnet_r2.yaml"), "--data.init_args.root",
                   str(root), cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("lit-seg: error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and str(bad_value) in errors[0]
    assert f"{pairs} image/mask pairs of {name} at {root}" in done.stderr and "1 bad" in done.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", RECIPES)
def test_one_step_fit_and_validation_on_a_tiny_root(name, tmp_path):
    root = RECIPES[name]["write"](tmp_path / name)
    done = lit_seg("fit", "--config", str(EXPERIMENTS / name / "ccnet_r2.yaml"), "--model.encoder_weights", "null",
                   "--data.init_args.root", str(root), "--data.init_args.crop_size", "[32, 32]",
                   "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0", "--trainer.max_steps", "1",
                   "--trainer.val_check_interval", "1", "--trainer.limit_val_batches", "1",
                   "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "runs" / f"{name}_ccnet_r2").iterdir()
    header, *rows = (run / "metrics.csv").read_text().splitlines()
    assert "val/mIoU" in header and rows
    assert f"val/IoU/{CLASS_NAMES[name][-1]}" in header  # the data set's classes, the last one included


# ---------------------------------------------------------------- your own data: experiments/folder/

FOLDER = EXPERIMENTS / "folder" / "base.yaml"
HEAD = EXPERIMENTS / "heads" / "ccnet_r2.yaml"


def test_own_data_recipe_takes_any_head_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["lit-seg"])
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(FOLDER), "--config", str(HEAD), "--experiment", "mydata_ccnet_r2",
              "--print_config"])
    assert done.value.code in (0, None), capsys.readouterr().err
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["data"]["init_args"]["dataset"] == "folder" and config["data"]["init_args"]["root"] == "data/mydata"
    assert config["model"]["head"]["class_path"] == "lit_seg.models.heads.CCHead"
    assert config["model"]["head"]["init_args"]["channels"] == 512 and config["experiment"] == "mydata_ccnet_r2"
    assert config["trainer"]["max_steps"] == 20000


def test_own_data_check_and_one_step_fit(tmp_path):
    root = write_folder(tmp_path / "mydata", size=(24, 40))
    done = lit_seg("check-data", "--config", str(FOLDER), "--data.init_args.root", str(root), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"4 image/mask pairs of folder at {root}" in done.stderr and "0 bad" in done.stderr
    done = lit_seg("fit", "--config", str(FOLDER), "--config", str(HEAD), "--experiment", "mydata_ccnet_r2",
                   "--model.encoder_weights", "null", "--data.init_args.root", str(root),
                   "--data.init_args.crop_size", "[32, 32]", "--data.init_args.batch_size", "2",
                   "--data.init_args.num_workers", "0", "--trainer.max_steps", "1",
                   "--trainer.val_check_interval", "1", "--trainer.limit_val_batches", "1",
                   "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "runs" / "mydata_ccnet_r2").iterdir()
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "val/IoU/person" in header  # the last name of the fixture's classes.txt
