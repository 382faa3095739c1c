"""W&B start-up: the Launch-inputs import is skipped only when no Launch inputs can exist."""

import subprocess
import sys

CHILD = """
import sys
from wandb.sdk.wandb_run import Run
from lit_seg.cli.wandb_env import skip_unstaged_launch_inputs

calls = []
Run._detect_and_apply_job_inputs = lambda self: calls.append("applied")
skip_unstaged_launch_inputs()
skip_unstaged_launch_inputs()  # idempotent: wraps once
Run._detect_and_apply_job_inputs(object())
print("unstaged", calls, "wandb.sdk.launch" in sys.modules)
import wandb.sdk.launch.inputs.internal  # what staging launch inputs imports
Run._detect_and_apply_job_inputs(object())
print("staged", calls)
"""


def test_launch_inputs_are_applied_exactly_when_they_can_have_been_staged():
    # A fresh interpreter: the test must see whether wandb.sdk.launch gets imported.
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=True)
    lines = out.stdout.splitlines()
    assert lines == ["unstaged [] False", "staged ['applied']"], out.stdout + out.stderr


def test_the_wrapped_wandb_method_still_exists():
    # A wandb release that renames it would silently bring the 0.6 s import back; this says so.
    from wandb.sdk.wandb_run import Run

    assert callable(Run._detect_and_apply_job_inputs)


EARLY_SERVICE = """
import os, sys
from lit_seg.cli.wandb_env import start_wandb_service_early
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
    from lit_seg.cli.wandb_env import start_wandb_service_early

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
