"""W&B start-up: its service process started while the command line is parsed, and only for runs
that log to W&B."""

import subprocess
import sys

EARLY_SERVICE = """
import os, sys
from lit_seg.api.wandb_env import start_wandb_service_early
from wandb.sdk import wandb_setup

thread = start_wandb_service_early(["fit", "--config", sys.argv[1]])
thread.join(60)
first = wandb_setup._singleton._connection
import wandb
run = wandb.init(mode="offline", dir=sys.argv[2], project="t")
run.log({"x": 1})
run.finish()
print("same service", first is not None and wandb_setup._singleton._connection is first)
"""


def test_the_early_service_is_the_one_wandb_init_uses(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("trainer:\n  logger:\n    - class_path: lightning.pytorch.loggers.WandbLogger\n")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("WANDB_")}
    out = subprocess.run([sys.executable, "-c", EARLY_SERVICE, str(config), str(tmp_path)], capture_output=True,
                         text=True, timeout=180, env={**env, "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert out.stdout.splitlines()[-1:] == ["same service True"], out.stdout + out.stderr
    assert list(tmp_path.glob("wandb/offline-run-*")), "the offline run was not written"


def test_no_early_service_where_nothing_logs_to_wandb(tmp_path, monkeypatch):
    from lit_seg.api.wandb_env import start_wandb_service_early

    with_wandb = tmp_path / "w.yaml"
    with_wandb.write_text("trainer:\n  logger:\n    - class_path: lightning.pytorch.loggers.WandbLogger\n")
    csv_only = tmp_path / "c.yaml"
    csv_only.write_text("trainer:\n  logger:\n    - class_path: lightning.pytorch.loggers.CSVLogger\n")
    for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "WANDB_DISABLED"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert start_wandb_service_early(["fit", "--config", str(csv_only)]) is None
    assert start_wandb_service_early(["ablate", "--config", str(with_wandb)]) is None  # a tool, not a run
    assert start_wandb_service_early([]) is None
    monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP rank that does not log
    assert start_wandb_service_early(["fit", "--config", str(with_wandb)]) is None
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert start_wandb_service_early(["fit", "--config", str(with_wandb)]) is None
