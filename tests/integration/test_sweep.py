"""The W&B sweep file: it parses, its grid is every experiment file x 3 seeds, the commands the
agent builds from it parse in our CLI (three of them; every config value is an existing file),
and a run started by `wandb agent` takes the agent's run id for its folder and W&B run.

The agent's expansion is wandb's own (``create_sweep_command_args``, the macros of
``wandb_agent.Agent._command_run``), so a change in wandb's formats shows here.
"""

import json
import os
import subprocess
import sys

import pytest
import yaml
from wandb.sdk.launch.sweeps import utils as sweep_utils

from lit_seg.api.config import merged_config
from lit_seg.cli import main
from tests.conftest import EXPERIMENTS, ROOT, TINY_FIT, lit_seg

SWEEP = EXPERIMENTS / "ablations" / "sweep.yaml"
# What wandb 0.31's agent substitutes for a ${name} token (wandb_agent.Agent._command_run).
AGENT_MACROS = {"env": ["/usr/bin/env"], "interpreter": ["python"], "program": None, "args_json_file": None}


@pytest.fixture(scope="module")
def sweep() -> dict:
    return yaml.safe_load(SWEEP.read_text())


def agent_command(sweep: dict, values: dict) -> list[str]:
    """The command line `wandb agent` runs for one point of the grid, built as the agent builds it."""
    command = {"args": {name: {"value": value} for name, value in values.items()}, "program": sweep["program"]}
    macros = {**sweep_utils.create_sweep_command_args(command), **AGENT_MACROS, "program": [sweep["program"]]}
    out = []
    for token in sweep_utils.create_sweep_command(list(sweep["command"])):
        token = str(token)
        if token.startswith("${") and token.endswith("}"):
            assert token[2:-1] in macros, f"{token} is not a macro wandb's agent knows"
            out += macros[token[2:-1]] or []
        else:
            out.append(token)
    return out


def test_sweep_file_is_what_the_head_list_gives(monkeypatch):
    from lit_seg.study import sweep as generator

    monkeypatch.chdir(ROOT)
    assert generator.render() == SWEEP.read_text(), "experiments/ablations/sweep.yaml is stale: run `lit-seg sweep`"
    assert generator.main(["--check"]) == 0


def test_sweep_is_a_grid_over_every_experiment_and_three_seeds(sweep):
    assert sweep["method"] == "grid" and sweep["metric"] == {"name": "val/mIoU", "goal": "maximize"}
    assert sweep["program"] and sweep["project"] == "lit-seg"
    configs = sweep["parameters"]["config"]["values"]
    experiments = sorted(p.relative_to(ROOT).as_posix() for p in EXPERIMENTS.glob("*.yaml") if p.name != "base.yaml")
    assert sorted(configs) == experiments and len(configs) == len(set(configs))
    assert all((ROOT / c).is_file() for c in configs)
    assert sweep["parameters"]["seed_everything"]["values"] == [0, 1, 2]
    # ${args} gives the parameters in the file's order or the server's (alphabetical): the same
    # here, so --config always comes before --seed_everything, which it would otherwise reset.
    assert list(sweep["parameters"]) == sorted(sweep["parameters"]) == ["config", "seed_everything"]


def test_agent_command_runs_the_cli_online_in_the_sweeps_own_group(sweep):
    command = agent_command(sweep, {"config": "experiments/fcn.yaml", "seed_everything": 1})
    assert command == ["/usr/bin/env", "WANDB_MODE=online", "python", "-m", "lit_seg", "fit",
                       "--config=experiments/fcn.yaml", "--seed_everything=1", "--group=sweep_reach"]


@pytest.mark.parametrize("config,seed", [("experiments/fcn.yaml", 0), ("experiments/danet.yaml", 1),
                                         ("experiments/gc_backbone.yaml", 2)])
def test_agent_commands_parse(sweep, config, seed, capsys, monkeypatch):
    command = agent_command(sweep, {"config": config, "seed_everything": seed})
    args = command[command.index("lit_seg") + 1:]
    monkeypatch.chdir(ROOT)  # the agent runs from the repo root: config paths are relative to it
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["lit-seg"])
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["experiment"] == config.split("/")[-1].removesuffix(".yaml")
    base = merged_config(EXPERIMENTS / "base.yaml")
    assert resolved["seed_everything"] == seed  # the schedule and task are the shared base's (reach, fp32)
    assert resolved["trainer"]["max_epochs"] == base["trainer"]["max_epochs"]
    assert resolved["data"]["init_args"]["task"] == base["data"]["init_args"]["task"] == "reach"
    assert resolved["group"] == "sweep_reach"  # not all_heads' group: those runs are on another task


def test_run_under_the_agent_takes_the_agents_run_id(sweep, tmp_path, monkeypatch):
    # What `wandb agent` sets for the process it starts (wandb_agent.Agent._command_run); offline here.
    sweep_id, run_id = "swp0test", "agentrun1"
    params = tmp_path / "wandb" / f"sweep-{sweep_id}" / f"config-{run_id}.yaml"
    params.parent.mkdir(parents=True)
    values = {"config": str(EXPERIMENTS / "fcn.yaml"), "seed_everything": 1}
    params.write_text("wandb_version: 1\n\n" + yaml.safe_dump({k: {"value": v} for k, v in values.items()}))
    for name, value in {"WANDB_SWEEP_ID": sweep_id, "WANDB_RUN_ID": run_id, "WANDB_DIR": str(tmp_path),
                        "WANDB_SWEEP_PARAM_PATH": str(params)}.items():
        monkeypatch.setenv(name, value)
    command = agent_command(sweep, values)
    done = lit_seg(*command[command.index("lit_seg") + 1:], *TINY_FIT, "--trainer.max_epochs", "1",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (tmp_path / "runs" / "fcn").iterdir()
    assert folder.name.endswith(f"-{run_id}")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["wandb_run_id"] == run_id and summary["group"] == "sweep_reach"
    (run_dir,) = (folder / "wandb").glob(f"offline-run-*-{run_id}")
    wandb = os.path.join(os.path.dirname(sys.executable), "wandb")
    records = subprocess.run([wandb, "leet", "inspect", "--json", str(run_dir)], capture_output=True, text=True,
                             timeout=120, check=True).stdout.splitlines()
    (run,) = [json.loads(r)["run"] for r in records if '"type":"run"' in r]
    assert run["run_id"] == run_id and run["sweep_id"] == sweep_id and run["run_group"] == "sweep_reach"
    assert run["config"]["update"]["seed_everything"] == 1  # the sweep's parameters, as W&B records them
