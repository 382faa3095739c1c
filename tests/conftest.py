import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Tests never touch the network or prompt for W&B.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize(module: torch.nn.Module, std: float = 0.5) -> torch.nn.Module:
    """Random weights everywhere, zero-initialised scales included, so tests see real attention."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


# A real (not fast_dev_run) short fit of the main experiment, as the README runs it, shared by
# the tests that need a run folder: 2 epochs of 3 batches at 64x64.
TINY_FIT = ["--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "1", "--trainer.limit_train_batches", "3",
            "--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar", "false",
            "--data.init_args.train_size", "48", "--data.init_args.val_size", "16",
            "--data.init_args.task", "global", "--data.init_args.image_size", "[64, 64]",
            "--data.init_args.num_workers", "0"]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI started by a test: the test hooks (``tests.fault_hooks``) importable
    from any working directory, W&B silent."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "WANDB_SILENT": "true", **extra}


def lit_seg(*args: str, cwd: Path, wandb_mode: str = "offline") -> subprocess.CompletedProcess:
    """The CLI in a fresh process, as a user runs it."""
    env = subprocess_env(WANDB_MODE=wandb_mode, HF_HUB_OFFLINE="0")
    return subprocess.run([sys.executable, "-m", "lit_seg", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="session")
def ccnet_run(tmp_path_factory) -> Path:
    """The run folder of a short `lit-seg fit --config experiments/ccnet_r2.yaml` (offline W&B)."""
    cwd = tmp_path_factory.mktemp("fit")
    done = lit_seg("fit", "--config", str(EXPERIMENTS / "ccnet_r2.yaml"), *TINY_FIT, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (cwd / "runs" / "ccnet_r2").iterdir()
    return folder


@pytest.fixture(scope="session")
def fault_runs(tmp_path_factory) -> dict:
    """Short fits stopped, resumed, diverged or out of disk on purpose, and their references
    (tests/fault_runs.py), run once for the resume, determinism and fault-tolerance tests."""
    from tests.fault_runs import run_fault_fits

    return run_fault_fits(tmp_path_factory.mktemp("faults"))
