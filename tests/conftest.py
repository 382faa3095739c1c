import os
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
