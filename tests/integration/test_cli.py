"""The command line as a user runs it: run folders, W&B offline, config includes, clear errors."""

import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
import yaml

from lit_seg.api.config import expand_argv
from lit_seg.cli import main
from lit_seg.errors import ConfigError
from lit_seg.train.module import SegmentationModule
from tests.conftest import EXPERIMENTS, ROOT, TINY_FIT, lit_seg, subprocess_env


def test_base_include_expands_to_base_then_the_experiments_own_keys(tmp_path):
    (tmp_path / "base.yaml").write_text("seed_everything: 3\nmodel: {encoder_depth: 3}\n")
    (tmp_path / "mid.yaml").write_text("_base_: base.yaml\nmodel: {aux_weight: 0.0}\n")
    (tmp_path / "exp.yaml").write_text("_base_: mid.yaml\nmodel: {encoder_depth: 4}\n")
    argv = expand_argv(["fit", "--config", str(tmp_path / "exp.yaml"), "--model.aux_weight", "1"])
    assert argv[0] == "fit" and argv[1::2][:3] == ["--config"] * 3
    assert argv[2] == str(tmp_path / "base.yaml")
    assert yaml.safe_load(argv[4]) == {"model": {"aux_weight": 0.0}, "experiment": "mid"}
    assert yaml.safe_load(argv[6]) == {"model": {"encoder_depth": 4}, "experiment": "exp"}
    assert argv[-2:] == ["--model.aux_weight", "1"]


def test_base_include_cycle_is_a_clear_error(tmp_path):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="includes itself through _base_"):
        expand_argv(["fit", "--config", str(tmp_path / "a.yaml")])


@pytest.fixture
def run_folder(ccnet_run):
    return ccnet_run


def test_run_folder_holds_config_checkpoints_metrics_and_summary(run_folder):
    config = yaml.safe_load((run_folder / "config.yaml").read_text())
    assert config["experiment"] == "ccnet_r2"
    assert config["model"]["head"]["class_path"] == "lit_seg.models.heads.CCHead"
    assert config["model"]["head"]["init_args"]["recurrence"] == 2
    assert config["model"]["optimizer"]["init_args"]["betas"] == [0.9, 0.999]  # resolved, not just what differs
    csv_logger = next(lg for lg in config["trainer"]["logger"] if lg["class_path"].endswith("CSVLogger"))
    assert csv_logger["init_args"]["version"] is None, "a saved config starts a new run, not this one"
    checkpoints = sorted(p.name for p in (run_folder / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(n.startswith("best-") for n in checkpoints)
    header = (run_folder / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/mIoU", "val/pixel_acc", "train/loss", "val/IoU/object_red"} <= set(header)
    summary = json.loads((run_folder / "summary.json").read_text())
    assert summary["global_step"] == 6 and 0.0 <= summary["val/mIoU_best"] <= 1.0
    assert run_folder.name.endswith(summary["wandb_run_id"])


def test_offline_wandb_run_holds_val_miou_and_config(run_folder):
    (wandb_run,) = (run_folder / "wandb").glob("offline-run-*")
    wandb = Path(sys.executable).with_name("wandb")
    done = subprocess.run([str(wandb), "leet", "inspect", "--summary", str(wandb_run)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    summary = json.loads((run_folder / "summary.json").read_text())
    assert "val/mIoU" in done.stdout
    as_json = subprocess.run([str(wandb), "leet", "inspect", "--summary", "--json", str(wandb_run)],
                             capture_output=True, text=True, timeout=60)
    # The best value is W&B's own summary (define_metric), the same as summary.json's.
    assert json.loads(as_json.stdout)["summary"]["val/mIoU"]["max"] == pytest.approx(summary["val/mIoU_best"])
    assert "ccnet_r2-seed0" in done.stdout and summary["wandb_run_id"] in done.stdout
    assert "model.head.init_args.recurrence" in done.stdout


def test_checkpoint_rebuilds_the_model_with_its_head(run_folder):
    module = SegmentationModule.load_from_checkpoint(run_folder / "checkpoints" / "last.ckpt")
    assert type(module.model.head).__name__ == "CCHead" and module.model.head.recurrence == 2
    assert module.class_names == ["background", "object_red", "object_green", "object_blue"]
    assert module(torch.randn(1, 3, 64, 64)).shape == (1, 4, 64, 64)


def test_validate_from_the_runs_own_config_gets_a_new_folder(run_folder):
    # The README's command: the saved config and checkpoint of a run, in the same working folder.
    cwd = run_folder.parents[2]
    ckpt = run_folder / "checkpoints" / "last.ckpt"
    done = lit_seg("validate", "--config", str(run_folder / "config.yaml"), "--ckpt_path", str(ckpt), cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    folders = list((cwd / "runs" / "ccnet_r2").iterdir())
    assert len(folders) == 2 and (set(folders) - {run_folder}).pop().joinpath("config.yaml").is_file()


def run_main(args: list[str], capsys, monkeypatch) -> tuple[int, str]:
    """The CLI in this process (same code path as the console scripts), for error cases."""
    monkeypatch.setattr(sys, "argv", ["lit-seg"])
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model.head", "lit_seg.models.heads.NoSuchHead"], "unknown or invalid head: choose one of"),
        (["--model.encoder_name", "vgg11"], "cannot run at output stride 8"),
        (["--model.encoder_name", "resnet18", "--model.encoder_weights", "imagenet"],
         "--model.encoder_weights /path/to/resnet18.safetensors"),
        (["--model.no_such_key", "1"], "unrecognized arguments: --model.no_such_key"),
    ],
    ids=["unknown-head", "no-output-stride-8", "hub-weights-offline", "misspelt-key"],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # as a user has it: the hub is tried, and is unreachable here
    code, err = run_main(["fit", "--config", str(EXPERIMENTS / "ccnet_r2.yaml"), *args], capsys, monkeypatch)
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert code == 2 and len(errors) == 1, err
    assert errors[0].startswith("lit-seg: error: ") and message in errors[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ckpt"))


def test_bad_input_from_the_shell_has_no_traceback(tmp_path):
    done = lit_seg("fit", "--config", str(EXPERIMENTS / "ccnet_r2.yaml"), "--model.encoder_name", "vgg11",
                   cwd=tmp_path, wandb_mode="disabled")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("lit-seg: error: encoder 'vgg11'")


def test_online_wandb_without_a_key_fails_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    code, err = run_main(["fit", "--config", str(EXPERIMENTS / "ccnet_r2.yaml")], capsys, monkeypatch)
    assert code == 2 and "WANDB_MODE=online needs a W&B API key" in err


def test_console_scripts_and_module_run_the_lit_seg_cli():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.name in ("lightning", "lit-seg")}
    assert scripts == {"lightning": "lit_seg.cli:main", "lit-seg": "lit_seg.cli:main"}
    done = subprocess.run([str(Path(sys.executable).with_name("lit-seg")), "fit", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "--model.head" in done.stdout and "--experiment" in done.stdout
    assert "from lit_seg.cli import main" in (ROOT / "lit_seg" / "__main__.py").read_text()


@pytest.mark.slow
def test_a_run_without_loggers_still_gets_its_own_run_folder(tmp_path):
    from tests.cli_fork import run_many
    from tests.conftest import EXPERIMENTS

    # Twice in one folder: Lightning's config saver would write ./config.yaml and refuse the second.
    command = ["fit", "--config", str(EXPERIMENTS / "ccnet_r2.yaml"), *TINY_FIT, "--trainer.max_epochs", "1",
               "--trainer.logger", "false"]
    for done in run_many([(command, tmp_path, {"WANDB_MODE": "disabled"})] * 2, timeout=240):
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert not (tmp_path / "config.yaml").exists() and not (tmp_path / "checkpoints").exists()
    folders = sorted((tmp_path / "runs" / "ccnet_r2").iterdir())
    assert len(folders) == 2
    for folder in folders:
        assert (folder / "config.yaml").is_file() and (folder / "checkpoints" / "last.ckpt").is_file()
        # The callbacks write into the same folder (they used to skip it without a logger).
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["global_step"] == 3 and summary["val/mIoU_best"] is not None
        assert (folder / "confusion").is_dir()


@pytest.mark.slow
def test_a_run_with_wandb_as_its_only_logger_keeps_its_checkpoints_in_the_run_folder_and_resumes(tmp_path):
    wandb_only = ["--trainer.logger", '[{"class_path": "lightning.pytorch.loggers.WandbLogger", '
                  '"init_args": {"project": "lit-seg"}}]']
    done = lit_seg("fit", "--config", str(EXPERIMENTS / "ccnet_r2.yaml"), *TINY_FIT, "--trainer.max_epochs", "1",
                   *wandb_only, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (tmp_path / "runs" / "ccnet_r2").iterdir()
    assert (folder / "checkpoints" / "last.ckpt").is_file() and (folder / "config.yaml").is_file()
    assert not list(folder.glob("lit-seg/*/checkpoints"))  # not under W&B's own folder
    resumed = lit_seg("fit", "--resume", str(folder), "--trainer.max_epochs", "2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    state = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert state["epoch"] == 1 and state["global_step"] == 6  # 3 steps an epoch, two epochs


def test_the_console_ends_with_the_summary_line_after_wandbs_own_lines(tmp_path):
    # As a user's terminal shows it: one stream, W&B not silenced (its offline run prints
    # "wandb sync <dir>" when it finishes; that must come before lit-seg's last line, not after).
    env = {k: v for k, v in subprocess_env(WANDB_MODE="offline", HF_HUB_OFFLINE="0").items() if k != "WANDB_SILENT"}
    done = subprocess.run([sys.executable, "-m", "lit_seg", "fit", "--config", str(EXPERIMENTS / "ccnet_r2.yaml"),
                           *TINY_FIT], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    (folder,) = (tmp_path / "runs" / "ccnet_r2").iterdir()
    best = json.loads((folder / "summary.json").read_text())["val/mIoU_best"]
    assert lines[-1] == (f"lit-seg: best val/mIoU {best:.4f} (epoch 1) | run runs/ccnet_r2/{folder.name} | "
                         f"view: wandb leet runs/ccnet_r2/{folder.name}/wandb"), lines[-6:]
    assert any("wandb sync" in line for line in lines[:-1]), "W&B's own end of the offline run is not shown"
    assert sum(line.startswith("lit-seg: best val/mIoU") for line in lines) == 1
