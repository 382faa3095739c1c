"""The ablation dashboard (lit_seg/study/dashboard.py), built offline: its panels, and that every
key they name is one a run really logs (read back from the offline run of a real short fit)."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import wandb_workspaces.reports.v2 as wr

from lit_seg.data import SyntheticDataModule
from lit_seg.study import dashboard
from lit_seg.train.metrics import named_scores
from tests.conftest import ROOT, lit_seg


def _flatten(tree: dict, prefix: str = "") -> set[str]:
    """Nested summary values as W&B's app names them: ``val/mIoU.max``, ``val/attention._type``."""
    keys = set()
    for key, value in tree.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= _flatten(value, f"{prefix}{key}.")
    return keys


def _leet(*args: str) -> str:
    wandb = Path(sys.executable).with_name("wandb")
    done = subprocess.run([str(wandb), "leet", "inspect", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _real_class_names() -> list[str]:
    """The built-in data set's class names, as the data module gives them to the model."""
    return list(SyntheticDataModule(train_size=16, batch_size=16, num_workers=0).class_names)


@pytest.mark.slow
def test_every_panel_names_a_key_the_runs_log(ccnet_run):
    """A real `lit-seg fit` (the shared tiny ccnet_r2 run, offline W&B) read back with `wandb leet`:
    its history, summary and config keys hold every key the dashboard's panels name."""
    (run_dir,) = (ccnet_run / "wandb").glob("offline-run-*")
    records = [json.loads(line) for line in _leet("--json", str(run_dir)).splitlines() if line.strip()]
    history = {key for r in records if r["type"] == "history" for key in r["history"]["item"]}
    summary = json.loads(_leet("--summary", "--json", str(run_dir)))
    config = summary["config"]
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    # The class names the run's data module gives the model, from the run's own config.
    data_args = {k.split(".", 2)[2]: v for k, v in config.items() if k.startswith("data.init_args.")}
    assert config["data.class_path"].endswith("SyntheticDataModule")
    class_names = SyntheticDataModule(**data_args).class_names

    workspace = dashboard.build_workspace("someone", run["project"], run["run_group"], class_names)
    assert dashboard.unknown_keys(workspace, history, _flatten(summary["summary"]), config) == []
    assert run["run_group"] in str(workspace.runset_settings.filters)
    # The check is not vacuous: every kind of key is there, class names, media and the head key included.
    keys = dashboard.panel_keys(workspace)
    assert {f"val/IoU/{name}" for name in class_names} | {"val/attention", "val/predictions"} <= keys["history"]
    assert {"head_gflops", "val/mIoU.max"} <= keys["summary"] and keys["config"] == {"experiment"}


def test_workspace_has_the_ablation_sections_and_panels():
    names = ["background", "object_red"]
    workspace = dashboard.build_workspace("someone", "lit-seg", "all_heads", names)
    sections = {s.name: s.panels for s in workspace.sections}
    assert list(sections) == ["Training curves", "Final mIoU per head", "Per-class IoU", "Galleries"]
    (miou_curve, *_) = sections["Training curves"]
    assert isinstance(miou_curve, wr.LinePlot) and miou_curve.y == ["val/mIoU"]
    assert miou_curve.x == "trainer/global_step" and miou_curve.groupby == wr.Config("experiment")
    bar, scatter = sections["Final mIoU per head"]
    assert isinstance(bar, wr.BarPlot) and bar.metrics == ["val/mIoU"] and bar.groupby_rangefunc == "stddev"
    assert isinstance(scatter, wr.ScatterPlot) and scatter.x == wr.SummaryMetric("head_gflops")
    per_class = [p for p in sections["Per-class IoU"] if isinstance(p, wr.LinePlot)]
    assert [p.y for p in per_class] == [["val/IoU/background"], ["val/IoU/object_red"]]
    assert [p.media_keys for p in sections["Galleries"]] == [["val/attention"], ["val/predictions"],
                                                              ["val/confusion_matrix"]]
    assert workspace.name == "lit-seg ablation all_heads" and "all_heads" in str(workspace.runset_settings.filters)
    workspace._to_model()  # what save() sends: serialises offline


@pytest.fixture
def logged() -> dict[str, set[str]]:
    """What a run logs, the per-class keys derived from the code that logs them (lit_seg.train.metrics on
    the data module's class names); the rest as a correct dashboard names them."""
    names = _real_class_names()
    keys = dashboard.panel_keys(dashboard.build_workspace("e", "p", "g", names))
    history = {k for k in keys["history"] if not k.startswith("val/IoU/")}
    history |= set(named_scores(torch.eye(len(names)), names, prefix="val/"))
    return {"history": history, "summary": keys["summary"], "config": keys["config"], "names": names}


def test_unknown_keys_reports_class_names_the_runs_do_not_log(logged):
    right = dashboard.build_workspace("e", "p", "g", logged["names"])
    assert dashboard.unknown_keys(right, logged["history"], logged["summary"], logged["config"]) == []
    wrong = dashboard.build_workspace("e", "p", "g", ["background", "red"])  # not the data set's names
    assert dashboard.unknown_keys(wrong, logged["history"], logged["summary"], logged["config"]) == [
        "history:val/IoU/red"]


def test_unknown_keys_catches_a_renamed_metric(logged):
    workspace = dashboard.build_workspace("e", "p", "g", logged["names"])
    curves, final, *_ = workspace.sections
    curves.panels[0].y = ["val/miou"]
    final.panels[1].y = wr.SummaryMetric("val/mIoU_best")  # summary.json's name, not W&B's summary
    final.panels[0].groupby = wr.Config("model.head")
    assert dashboard.unknown_keys(workspace, logged["history"], logged["summary"], logged["config"]) == [
        "history:val/miou", "summary:val/mIoU_best", "config:model.head"]


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the dashboard command touched the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr("wandb.Api", refuse)


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_main_refuses_offline_in_one_line(mode, monkeypatch, capsys, no_network):
    monkeypatch.setenv("WANDB_MODE", mode)
    assert dashboard.main(["--group", "all_heads"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and f"WANDB_MODE={mode}" in err


def test_main_refuses_online_without_a_key_in_one_line(monkeypatch, tmp_path, capsys, no_network):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    assert dashboard.main(["--group", "all_heads", "--entity", "someone"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "WANDB_API_KEY" in err


def test_cli_dashboard_offline_exits_non_zero_with_one_line(tmp_path):
    done = lit_seg("dashboard", "--group", "all_heads", cwd=ROOT)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("lit-seg dashboard: not saved:")
