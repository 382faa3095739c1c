"""An ablation's W&B dashboard, defined in code (wandb-workspaces), for the runs of one W&B group.

    lit-seg dashboard --group all_heads [--entity E] [--project lit-seg] [--classes background ...]

Sections: training curves (``val/mIoU``, ``val/loss``, ``train/loss`` against the global step, one
line per head: mean of its seeds with their spread), final ``val/mIoU`` per head (mean ± std over
seeds), ``val/mIoU`` against the head's GFLOPs, per-class IoU, and the attention and prediction
galleries. Every key a panel names is one the runs log (:func:`unknown_keys` checks that against
a run; ``tests/test_dashboard.py`` does it against a real offline run). Saving needs W&B online and
logged in; offline the command says so in one line and touches no network.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws

from lit_seg.api.wandb_env import check_wandb_mode
from lit_seg.errors import ConfigError

# One line per head: runs are grouped by the `experiment` config key (also the runs' first tag),
# not by `model.head.class_path`, because experiments of one head class differ in what an
# ablation varies (ccnet_r1/r2/r3 are all CCHead). `experiment` is a one-segment config key, so
# wr.Config needs no `.value` placement for W&B's flat dotted keys.
HEAD_KEY = "experiment"
# The x-axis the Lightning W&B logger declares (`define_metric("*", step_metric=...)`): W&B's own
# `_step` counts log calls, not training steps.
STEP_KEY = "trainer/global_step"
# Summaries the runs carry: RunSummary's head GFLOPs and W&B's define_metric best/last of val/mIoU
# (lit_seg.api.callbacks.BEST_METRICS: summary "val/mIoU" = {"max": ..., "last": ...}).
GFLOPS_KEY = "head_gflops"
BEST_MIOU = "val/mIoU.max"
# Images that AttentionMapLogger and PredictionLogger log, and the confusion matrix.
ATTENTION_KEY = "val/attention"
PREDICTIONS_KEY = "val/predictions"
CONFUSION_KEY = "val/confusion_matrix"


def _per_head(**kwargs: Any) -> dict[str, Any]:
    """Panel options that draw one series per head: the mean over seeds and its standard deviation."""
    return dict(groupby=wr.Config(HEAD_KEY), groupby_aggfunc="mean", groupby_rangefunc="stddev", **kwargs)


def build_workspace(entity: str, project: str, group: str, class_names: Sequence[str]) -> ws.Workspace:
    """The dashboard of W&B group ``group`` (an ablation's name) in ``entity/project``; not saved."""
    curves = ws.Section(name="Training curves", is_open=True, panels=[
        wr.LinePlot(title="val/mIoU by head (mean ± std over seeds)", x=STEP_KEY, y=["val/mIoU"],
                    **_per_head()),
        wr.LinePlot(title="val/loss by head", x=STEP_KEY, y=["val/loss"], **_per_head()),
        wr.LinePlot(title="train/loss by head", x=STEP_KEY, y=["train/loss"], smoothing_type="exponential",
                    smoothing_factor=0.6, **_per_head()),
    ])
    final = ws.Section(name="Final mIoU per head", is_open=True, panels=[
        # A bar plot shows each run's last value: the final mIoU, averaged over a head's seeds.
        wr.BarPlot(title="final val/mIoU per head (mean ± std over seeds)", metrics=["val/mIoU"],
                   orientation="v", **_per_head()),
        # One point per run: the spread of a head's seeds is the spread of its points.
        wr.ScatterPlot(title="best val/mIoU per run against its head GFLOPs", x=wr.SummaryMetric(GFLOPS_KEY),
                       y=wr.SummaryMetric(BEST_MIOU), log_x=True),
    ])
    per_class = ws.Section(name="Per-class IoU", is_open=True, panels=[
        wr.BarPlot(title="final IoU per class and head", metrics=[f"val/IoU/{name}" for name in class_names],
                   orientation="v", **_per_head()),
        *(wr.LinePlot(title=f"val/IoU/{name}", x=STEP_KEY, y=[f"val/IoU/{name}"], **_per_head())
          for name in class_names),
    ])
    galleries = ws.Section(name="Galleries", is_open=True, panels=[
        # gallery_axis="step": page through the validations; each run's images side by side.
        wr.MediaBrowser(title="attention maps (AttentionMapLogger)", media_keys=[ATTENTION_KEY], gallery_axis="step"),
        wr.MediaBrowser(title="predictions over ground truth (PredictionLogger)", media_keys=[PREDICTIONS_KEY],
                        gallery_axis="step"),
        wr.MediaBrowser(title="confusion matrix (ConfusionMatrixLogger)", media_keys=[CONFUSION_KEY],
                        gallery_axis="step"),
    ])
    return ws.Workspace(
        entity=entity, project=project, name=f"lit-seg ablation {group}",
        sections=[curves, final, per_class, galleries],
        settings=ws.WorkspaceSettings(x_axis=STEP_KEY),
        # Only this ablation's runs, the run table grouped by head as the panels are.
        runset_settings=ws.RunsetSettings(filters=[ws.Metric("Group") == group], groupby=[ws.Config(HEAD_KEY)]),
    )


# --- which keys the panels name ------------------------------------------------------------------


def _name(metric: Any) -> str:
    return metric if isinstance(metric, str) else metric.name


def panel_keys(workspace: ws.Workspace) -> dict[str, set[str]]:
    """The keys the workspace's panels and run set name, by where W&B reads them:
    ``history`` (logged metrics and media), ``summary`` and ``config``."""
    keys: dict[str, set[str]] = {"history": set(), "summary": set(), "config": set()}

    def add(metric: Any, default: str) -> None:
        if metric is None or metric in ("Step", "None"):  # W&B's own step, not a logged key
            return
        if isinstance(metric, wr.Config):
            keys["config"].add(metric.name)
        elif isinstance(metric, wr.SummaryMetric):
            keys["summary"].add(metric.name)
        else:
            keys[default].add(_name(metric))

    for section in workspace.sections:
        for panel in section.panels:
            if isinstance(panel, wr.LinePlot):
                for metric in [panel.x, *panel.y]:
                    add(metric, "history")
            elif isinstance(panel, wr.BarPlot):
                for metric in panel.metrics:
                    add(metric, "history")
            elif isinstance(panel, wr.ScatterPlot):  # a bare string there is a summary key
                for metric in (panel.x, panel.y, panel.z):
                    add(metric, "summary")
            elif isinstance(panel, wr.MediaBrowser):
                keys["history"].update(panel.media_keys)
            else:
                raise TypeError(f"panel_keys: no rule for {type(panel).__name__}; add one")
            groupby = getattr(panel, "groupby", None)
            if groupby is not None:
                add(groupby if isinstance(groupby, wr.Config) else wr.Config(_name(groupby)), "config")
    for group in workspace.runset_settings.groupby:
        if isinstance(group, ws.Config):
            keys["config"].add(group.name)
    return keys


def unknown_keys(workspace: ws.Workspace, history: Iterable[str], summary: Iterable[str],
                 config: Iterable[str]) -> list[str]:
    """``"<where>:<key>"`` for every key a panel names that the runs do not log (empty: all known).

    ``history``: keys of the runs' history rows (a media key counts when its ``<key>._type`` is
    there, as W&B's records flatten media); ``summary``: summary keys with nested dicts flattened
    by ``.`` (``val/mIoU.max``); ``config``: flattened config keys.
    """
    logged = {"history": set(history), "summary": set(summary), "config": set(config)}
    missing = []
    for where, names in panel_keys(workspace).items():
        for name in sorted(names):
            if name not in logged[where] and f"{name}._type" not in logged[where]:
                missing.append(f"{where}:{name}")
    return missing


# --- the command ---------------------------------------------------------------------------------


def _refusal() -> str | None:
    """Why the dashboard cannot be saved from here, in one line, checked without the network
    where it can be (mode, API key) and with one short connection otherwise; None when it can."""
    # Unlike a training run (offline unless asked), saving a dashboard is an online act by nature.
    mode = os.environ.setdefault("WANDB_MODE", "online")
    if mode not in ("online", "run"):
        return (f"W&B is {mode} here (WANDB_MODE={mode}): a dashboard is saved to the W&B server; "
                f"run `wandb login`, then WANDB_MODE=online lit-seg dashboard ...")
    try:
        check_wandb_mode()  # the CLI's own check: an API key, and the server reachable (3 s)
    except ConfigError as err:
        return str(err)
    return None


def _class_names_of_group(api: Any, path: str, group: str) -> list[str] | None:
    """The class names the group's runs log (``val/IoU/<class>`` summary keys of its newest run)."""
    for run in api.runs(path, filters={"group": group}, per_page=1):
        return [key.split("/", 2)[2] for key in run.summary.keys() if key.startswith("val/IoU/")]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lit-seg dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", required=True, help="W&B group: the ablation's name, e.g. all_heads")
    parser.add_argument("--entity", help="W&B entity (default: your default entity)")
    parser.add_argument("--project", default="lit-seg", help="W&B project (default: lit-seg)")
    parser.add_argument("--classes", nargs="+", help="class names for the per-class IoU panels "
                                                     "(default: those the group's runs log)")
    args = parser.parse_args(argv)
    refusal = _refusal()
    if refusal is not None:
        print(f"lit-seg dashboard: not saved: {refusal}", file=sys.stderr)
        return 2
    import wandb

    try:
        api = wandb.Api()
        entity = args.entity or api.default_entity
        if not entity:
            raise RuntimeError("no W&B entity: pass --entity or log in with `wandb login`")
        classes = args.classes or _class_names_of_group(api, f"{entity}/{args.project}", args.group)
        if classes is None:
            raise RuntimeError(f"no runs in group {args.group!r} of {entity}/{args.project}; "
                               f"run `lit-seg ablate` online or `wandb sync` its offline runs first")
        workspace = build_workspace(entity, args.project, args.group, classes).save()
    except Exception as err:  # noqa: BLE001 - the W&B client's errors, said in one line
        print(f"lit-seg dashboard: not saved: {' '.join(str(err).split()) or type(err).__name__}", file=sys.stderr)
        return 1
    print(workspace.url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
