"""The short fits the fault-tolerance tests read, run once per session (``fault_runs`` in conftest).

All are the README's command for CCNet (R=2) on the built-in data set, shortened as ``TINY_FIT``
(2 epochs of 3 batches, 64x64), each a fresh process (:mod:`tests.cli_fork`) with one intra-op
thread, as the determinism they check needs the same thread count (docs/runs.md, "Determinism"):

- ``ref``, ``again``: uninterrupted, twice (determinism);
- ``int`` -> ``res1`` -> ``res2``: Ctrl-C (SIGINT) during step 2 stops the run after it, resumed
  with ``lit-seg fit --resume``; SIGTERM during step 4 stops it again, resumed again to the end;
  W&B offline, to check the W&B run id;
- ``nan``: all weights set to NaN after step 4 (the next loss is NaN);
- ``full``: the disk "fills up" after two checkpoint writes.
"""

import json
import signal
import subprocess
from pathlib import Path

from tests.cli_fork import run_many
from tests.conftest import EXPERIMENTS, TINY_FIT

CONFIG = ["--config", str(EXPERIMENTS / "ccnet_r2.yaml")]
RUN = "@glob:runs/int/*"  # the interrupted run's folder, found when the command starts


def hook(name: str, **init_args) -> str:
    """A test-only callback of tests/fault_hooks.py, added on the command line."""
    return "--trainer.callbacks+=" + json.dumps({"class_path": f"tests.fault_hooks.{name}", "init_args": init_args})


def run_fault_fits(cwd: Path) -> dict[str, subprocess.CompletedProcess]:
    offline, off = {"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}, {"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    plugins = json.dumps([{"class_path": "tests.fault_hooks.DiskFullAfter", "init_args": {"writes": 2}}])
    commands = {
        "ref": (["fit", *CONFIG, *TINY_FIT, "--experiment", "ref"], off),
        "again": (["fit", *CONFIG, *TINY_FIT, "--experiment", "again"], off),
        "int": (["fit", *CONFIG, *TINY_FIT, "--experiment", "int",
                 hook("SignalAtStep", step=1, signum=int(signal.SIGINT))], offline),
        "res1": (["fit", "--resume", RUN, hook("SignalAtStep", step=3, signum=int(signal.SIGTERM))], offline),
        "res2": (["fit", "--resume", RUN], offline),
        "nan": (["fit", *CONFIG, *TINY_FIT, "--experiment", "nan", hook("PoisonAtStep", step=4)], off),
        "full": (["fit", *CONFIG, *TINY_FIT, "--experiment", "full", "--trainer.plugins", plugins], off),
    }
    results = run_many([(args, cwd, env) for args, env in commands.values()], timeout=240)
    return {"cwd": cwd, **dict(zip(commands, results))}


def run_folder(cwd: Path, experiment: str) -> Path:
    (folder,) = (cwd / "runs" / experiment).iterdir()
    return folder
