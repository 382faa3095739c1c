"""The programmatic core (lit_seg.api) against the command line: the same arguments give the same run,
to the last bit, for fit, validate and predict; every run folder holds its record."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from lit_seg import api
from lit_seg.api.records import read_record
from tests.conftest import EXPERIMENTS, TINY_FIT, subprocess_env
from tests.fault_runs import run_folder

CONFIG = EXPERIMENTS / "ccnet_r2.yaml"
# One thread in both processes: bit-identical results need the same thread count (README, determinism).
THREADS = {"OMP_NUM_THREADS": "1"}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "lit_seg", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=subprocess_env(WANDB_MODE="disabled", **THREADS))
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def metrics(folder: Path) -> list[dict]:
    with (folder / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same short fit run by ``lit-seg fit`` (a fresh process) and by ``api.fit`` (here)."""
    by_cli, by_api = tmp_path_factory.mktemp("cli"), tmp_path_factory.mktemp("api")
    cli("fit", "--config", str(CONFIG), *TINY_FIT, cwd=by_cli)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.chdir(by_api)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        record = api.fit(CONFIG, overrides=TINY_FIT)
    finally:
        torch.set_num_threads(threads)
        monkeypatch.undo()
    return run_folder(by_cli, "ccnet_r2"), by_api / record.run_folder, record


@pytest.mark.slow
def test_fit_from_python_is_the_command_lines_fit_to_the_last_bit(pair):
    by_cli, by_api, record = pair
    assert metrics(by_cli) == metrics(by_api)  # every logged value, every step
    ours, theirs = (torch.load(f / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
                    for f in (by_cli, by_api))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    a, b = read_record(by_cli), read_record(by_api)
    assert a.config_hash == b.config_hash and a.model_code == b.model_code
    assert a.metrics.pop("wandb_run_id") != b.metrics.pop("wandb_run_id")  # each run its own id (its folder's)
    assert a.metrics == b.metrics
    assert record.status == "finished" and record.run_folder == str(by_api.relative_to(by_api.parents[2]))
    assert record.metrics["val_mIoU_final"] == round(
        json.loads((by_cli / "summary.json").read_text())["metrics"]["val/mIoU"], 5)


@pytest.mark.slow
def test_validate_and_predict_from_python_are_the_command_lines(pair, tmp_path, monkeypatch):
    by_cli, by_api, _ = pair
    images = tmp_path / "photos"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((40, 56, 3)) * 255).astype(np.uint8)).save(images / f"p{i}.png")
    cwd_cli, cwd_api = tmp_path / "cli", tmp_path / "api"
    cwd_cli.mkdir()
    cwd_api.mkdir()
    cli("validate", "--ckpt_path", str(by_cli), "--data.init_args.num_workers", "0", cwd=cwd_cli)
    cli("predict", "--ckpt_path", str(by_cli), "--data.init_args.predict_dir", str(images), cwd=cwd_cli)
    monkeypatch.chdir(cwd_api)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    validated = api.validate(by_api, overrides={"data.init_args.num_workers": 0})
    predicted = api.predict(by_api, overrides={"data.init_args.predict_dir": str(images)})
    (cli_validate,) = [p.parent for p in (cwd_cli / "runs" / "ccnet_r2").glob("*/record.json")
                       if read_record(p.parent).subcommand == "validate"]
    theirs = json.loads((cli_validate / "summary.json").read_text())["metrics"]
    ours = json.loads((cwd_api / validated.run_folder / "summary.json").read_text())["metrics"]
    assert ours == theirs and ours["val/mIoU"] > 0 and validated.metrics["val_mIoU_final"] == round(
        theirs["val/mIoU"], 5)
    cli_masks = sorted((cwd_cli / "runs").rglob("predictions/p*.png"))
    api_masks = sorted((cwd_api / predicted.run_folder / "predictions").glob("p*.png"))
    assert [p.name for p in cli_masks] == [p.name for p in api_masks] == ["p0.png", "p1.png"]
    for a, b in zip(cli_masks, api_masks):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


@pytest.mark.slow
def test_a_run_that_fails_in_training_keeps_its_folder_with_a_failed_record(tmp_path, monkeypatch):
    from lit_seg.errors import RunError
    from tests.fault_runs import hook

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with pytest.raises(RunError, match="non-finite loss"):
        api.fit(CONFIG, overrides=[*TINY_FIT, hook("PoisonAtStep", step=2)])
    (folder,) = (tmp_path / "runs" / "ccnet_r2").iterdir()
    record = read_record(folder)
    assert record.status == "failed" and record.error.startswith("non-finite loss (nan) at step 2")
    assert record.parts[-1]["status"] == "failed" and record.parts[-1]["wall_s"] > 0


def test_compose_builds_what_the_command_line_builds_without_a_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parts = api.compose(CONFIG, overrides={"data.init_args.task": "binding", "model.head.init_args.recurrence": 3})
    assert parts.module.model.head.recurrence == 3 and parts.datamodule.hparams["task"] == "binding"
    assert parts.config["model"]["head"]["class_path"] == "lit_seg.models.heads.CCHead"
    assert parts.config["experiment"] == "ccnet_r2" and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_precision_auto_is_resolved_into_the_saved_config_and_the_record(tmp_path, monkeypatch):
    """A resume (or a requeued job on another node) reads config.yaml: it must hold the precision
    this machine chose, not `auto` to be chosen again."""
    from lit_seg.train.precision import resolve_precision

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    record = api.fit(EXPERIMENTS / "fcn.yaml", overrides=[*TINY_FIT, "--trainer.max_epochs=1",
                                                          "--trainer.precision=auto"])
    chosen = resolve_precision("auto")[0]
    saved = yaml.safe_load((Path(record.run_folder) / "config.yaml").read_text())
    assert saved["trainer"]["precision"] == chosen and record.precision == chosen
