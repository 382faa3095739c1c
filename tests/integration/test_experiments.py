"""Every experiment file (one ablation row each) parses, builds its model through the CLI and trains
for two steps, writing a complete run folder."""

import csv
import inspect
import json
import math

import pytest
import yaml

from lit_seg.api.config import expand_argv, merged_config
from lit_seg.api.parser import LitSegCLI
from lit_seg.models.heads import HEADS, DecodeHead
from tests.conftest import EXPERIMENTS

FILES = sorted(p for p in EXPERIMENTS.glob("*.yaml") if p.name != "base.yaml")
# OCNet's own dropout before the classifier (the official networks; every other head: 0.1).
OCNET_DROPOUT = {"oc_base": 0.05, "oc_pyramid": 0.05, "oc_asp": 0.1}

# 2 train batches of 4 images at 64x64, 1 val batch, no workers: seconds per run.
TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.log_every_n_steps", "1", "--trainer.num_sanity_val_steps", "0",
        "--data.init_args.task", "global", "--data.init_args.image_size", "[64, 64]",
        "--data.init_args.batch_size", "4",
        "--data.init_args.train_size", "8", "--data.init_args.val_size", "4", "--data.init_args.num_workers", "0"]


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    # The base config's run folders (runs/<experiment>/...) go under tmp_path; W&B does nothing.
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lit-seg"])  # pytest's own arguments are not the CLI's


@pytest.mark.parametrize("folder", [EXPERIMENTS, *(EXPERIMENTS / name for name in ("cityscapes", "voc", "ade20k"))],
                         ids=["built-in", "cityscapes", "voc", "ade20k"])
def test_every_head_of_the_list_has_its_experiment_and_they_agree(folder):
    """experiments/<name>.yaml (and cityscapes/, voc/, ade20k/<name>.yaml) is the head list's variant <name>:
    its class, and the variant's options (the YAML may add sizes such as channels or dilations)."""
    for name, variant in HEADS.items():
        head = merged_config(folder / f"{name}.yaml")["model"]["head"]
        assert head["class_path"] == variant.class_path, name
        options = head.get("init_args", {})
        for key, value in variant.options.items():
            assert options.get(key, value) == value, (name, key)
            defaulted = inspect.signature(variant.head).parameters[key].default
            assert key in options or defaulted == value, (name, key)


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("interventions/*.yaml")), ids=lambda p: p.stem)
def test_intervention_is_its_head_with_the_options_its_tests_check(path):
    """experiments/interventions/<name>.yaml composes into the head and options that
    tests/unit/test_heads.py builds under the same name (and checks value by value there)."""
    from tests.unit.test_heads import HEADS as TESTED

    config = merged_config(path)
    head = config["model"]["head"]
    assert config["experiment"] == path.stem and path.stem in TESTED
    cls, options = TESTED[path.stem]
    assert head["class_path"] == f"lit_seg.models.heads.{cls.__name__}"
    assert {k: v for k, v in head.get("init_args", {}).items() if k in options} == options


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_experiment_file_is_the_recipe_and_its_head_file(path):
    """experiments/<name>.yaml = base.yaml + heads/<name>.yaml (the file the Cityscapes twin reuses)
    + at most a few built-in sizes; the head itself is stated in the head file only."""
    text = path.read_text()
    assert text.startswith("# "), "the first line says what the row tests"
    content = yaml.safe_load(text)
    assert content["_base_"] == ["base.yaml", f"heads/{path.stem}.yaml"]
    assert set(content) <= {"_base_", "model"}
    assert "class_path" not in (content.get("model") or {}).get("head", {})


def test_every_experiment_has_one_head_file_and_every_head_file_an_experiment():
    heads = sorted(p.stem for p in (EXPERIMENTS / "heads").glob("*.yaml"))
    assert heads == sorted(p.stem for p in FILES)
    assert set(HEADS) <= set(heads)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_experiment_instantiates_and_trains(path, tmp_path):
    # Parsed and instantiated once (run=False), then trained: the CLI's parser is the slow part.
    args = ["--config", str(path), *TINY, "--trainer.default_root_dir", str(tmp_path)]
    cli = LitSegCLI(args=expand_argv(args), run=False)
    own = merged_config(path)["model"]
    head = cli.model.model.head
    assert isinstance(head, DecodeHead)
    expected = own["head"]["class_path"]
    assert f"{type(head).__module__.rsplit('.', 1)[0]}.{type(head).__name__}" == expected
    assert head.channels == 64  # the base's small head width carries over
    stated = own["head"].get("init_args", {})
    for key, value in stated.items():
        assert cli.config.model.head.init_args[key] == value, key
    # What the files leave unstated is the head's own default, never the default of the head the
    # base (or the module) names first (jsonargparse#460 gave every OCNet head FCN's dropout 0.1).
    signature = inspect.signature(type(head)).parameters
    for key, value in cli.config.model.head.init_args.items():
        if key not in stated:
            default = signature[key].default
            assert value == (list(default) if isinstance(default, tuple) else default), key
    if path.stem in OCNET_DROPOUT:  # the official values, in the built head
        assert head.dropout.p == OCNET_DROPOUT[path.stem]
    assert list(cli.config.model.encoder_gc_stages) == own.get("encoder_gc_stages", [])
    assert cli.config.experiment == path.stem

    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    (folder,) = (tmp_path / "runs" / path.stem).iterdir()
    assert (folder / "checkpoints" / "last.ckpt").is_file() and (folder / "config.yaml").is_file()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["global_step"] == 2 and 0.0 <= summary["val/mIoU_best"] <= 1.0
    with (folder / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)


TASK_FILES = sorted((EXPERIMENTS / "tasks").glob("*.yaml"))


def test_every_task_has_its_overlay():
    from lit_seg.data.synthetic import TASKS

    assert sorted(p.stem for p in TASK_FILES) == sorted(TASKS)


@pytest.mark.parametrize("task", TASK_FILES, ids=lambda p: p.stem)
def test_each_task_trains_through_its_overlay_at_its_own_size(task, tmp_path):
    """A short fit per task, laid over the quick start's experiment as the ablation does it:
    the task's images reach the model at the task's size, and the run folder records the task."""
    from lit_seg.data.synthetic import TASK_LAYOUTS

    tiny = list(TINY)
    at = tiny.index("--data.init_args.task")
    del tiny[at:at + 4]  # the task's own task and size
    args = ["--config", str(EXPERIMENTS / "ccnet_r2.yaml"), "--config", str(task), *tiny,
            "--trainer.default_root_dir", str(tmp_path)]
    cli = LitSegCLI(args=expand_argv(args), run=False)
    assert cli.datamodule.image_size == TASK_LAYOUTS[task.stem].image_size
    images, masks = next(iter(cli.datamodule.train_dataloader()))
    assert images.shape[-2:] == TASK_LAYOUTS[task.stem].image_size and (masks == 255).any()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    (folder,) = (tmp_path / "runs" / "ccnet_r2").iterdir()
    assert yaml.safe_load((folder / "config.yaml").read_text())["data"]["init_args"]["task"] == task.stem
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["global_step"] == 2
    assert summary["head_flops_input"][-2:] == list(TASK_LAYOUTS[task.stem].image_size), "FLOPs at the task's size"
