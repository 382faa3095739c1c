# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Ablation analysis: which context head is worth its cost?
#
# One ablation is a set of experiments (`experiments/*.yaml`), each run with several seeds.
# This notebook reads the runs, either offline from the CSV that `lit-seg ablate` writes
# (`results/<ablation>.csv`, one row per run, with the run folders under `runs/`) or from the
# W&B runs of the ablation's group, and answers:
#
# 1. How good is each head, and what does it cost? (table, mIoU against FLOPs / latency / memory)
# 2. Do the attention heads beat the FCN baseline by more than the seeds disagree?
# 3. Does criss-cross attention gain from a second and third recurrence (R = 1, 2, 3)?
# 4. Is the global-context block as good as non-local for less?
# 5. OCNet: base, Pyramid or ASP? DANet: what do PAM and CAM each add?
# 6. Which classes does each head get right, and where does its attention look?
#
# Every number is over the *finished* runs of an experiment: mean ± sample standard deviation
# over seeds, with `n` the number of runs. Questions whose experiments are not in the ablation
# are skipped with a note. An ablation over tasks (`tasks:` in its file) first gets each head's
# profile across the tasks; the questions are then answered for one task (`TASK`).
#
# By default it reads the current task suite, `results/tasks.csv`, and is committed with its outputs
# (docs/notebook.md shows them). Run it headless on another results file (paths relative to the
# repository root):
#
# ```bash
# RESULTS_CSV=results/<ablation>.csv scripts/run jupyter execute notebooks/ablation_analysis.ipynb --output=/tmp/analysis.ipynb
# ```

# %% tags=["parameters"]
import os

SOURCE = os.environ.get("SOURCE", "csv")  # "csv" (offline) or "wandb"
RESULTS_CSV = os.environ.get("RESULTS_CSV", "results/tasks.csv")  # a path or a glob, e.g. results/*.csv
RUNS_ROOT = os.environ.get("RUNS_ROOT", "")  # the run_folder paths are relative to it (default: the repo root)
WANDB_PATH = os.environ.get("WANDB_PATH", "")  # "entity/project"
WANDB_GROUP = os.environ.get("WANDB_GROUP", "tasks")  # the ablation's name
METRIC = os.environ.get("METRIC", "val_mIoU_best")  # or val_mIoU_final
TASK = os.environ.get("TASK", "")  # an ablation over tasks: the task of sections 1-7 (default: its first)

# %%
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's, on importing it in a kernel

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display
from PIL import Image

from lit_seg.study import analysis

ROOT = analysis.find_root()
RUNS_ROOT = analysis.resolve(RUNS_ROOT or ROOT, ROOT)


def relative(path) -> str:
    """A path as the repository names it (the committed outputs hold no machine's folders)."""
    path = Path(str(path))
    return str(path.relative_to(ROOT)) if path.is_absolute() and path.is_relative_to(ROOT) else str(path)


pd.set_option("display.width", 200)
pd.set_option("display.max_columns", 30)

# %% [markdown]
# ## The runs
#
# One row per run. A run that failed stays in the table with `status` = `failed` and counts in
# the `failed` column below, not in the means.

# %%
if SOURCE == "wandb":
    import wandb

    if not WANDB_PATH:
        raise ValueError("SOURCE=wandb needs WANDB_PATH=entity/project (and WANDB_GROUP, the ablation's name)")
    runs = analysis.load_wandb(wandb.Api(), WANDB_PATH, WANDB_GROUP, runs_root=RUNS_ROOT)
    print(f"{len(runs)} runs from W&B {WANDB_PATH}, group {WANDB_GROUP}")
elif SOURCE == "csv":
    csv_path = analysis.resolve(RESULTS_CSV, ROOT)
    runs = analysis.load_csv(csv_path)
    print(f"{len(runs)} runs from {relative(csv_path)}")
else:
    raise ValueError(f"SOURCE must be 'csv' or 'wandb', not {SOURCE!r}")

print(f"ablation: {', '.join(runs['ablation'].dropna().unique()) or '?'}; "
      f"finished: {(runs['status'] == 'finished').sum()}, other: {(runs['status'] != 'finished').sum()}")
display(runs[["experiment", "head", "seed", "status", METRIC, "head_gflops", "head_fwdbwd_ms", "run_folder"]])

# %% [markdown]
# ## Tasks
#
# An ablation over tasks runs every head on every task. First, whether each head can learn each
# task and how reliably: the median final mIoU, every seed's value, how many seeds learn the task
# (✓ reliably, ~ some), by the rule printed below. Then its profile: final mIoU per head and task
# (mean ± std over seeds, n seeds), ↑ / ↓ where a head differs from FCN on that task by the
# project's rule, and the query dependence per head and task. The sections below then look at
# one task only, since a head's numbers on different tasks do not average.

# %%
if analysis.has_tasks(runs):
    capacity = analysis.capacity_profile(runs)
    display(analysis.format_capacity(capacity))
    print(f"The rule: {analysis.LEARNT_RULE}.")
    mixed = analysis.mixed_cells(capacity)
    print(f"Seeds disagree in {len(mixed)} cells" + (f": {', '.join(f'{e} on {t}' for e, t in mixed)}." if mixed
                                                     else "."))
    profile = analysis.task_profile(runs)
    display(analysis.format_profile(profile))
    print(f"↑ / ↓: different from FCN, above / below it ({analysis.DIFFERENCE_RULE}).")
    dependence = analysis.query_dependence_profile(profile)
    if len(dependence):
        display(dependence)
    TASK = TASK or analysis.tasks(runs)[0]
    if TASK not in analysis.tasks(runs):
        raise ValueError(f"TASK={TASK!r} is not in these runs: choose one of {', '.join(analysis.tasks(runs))}")
    runs = runs[runs["task"] == TASK].reset_index(drop=True)
    print(f"Sections 1-7: task {TASK} ({len(runs)} runs); TASK=<name> for another.")
else:
    print("No tasks in these runs: sections 1-7 cover all of them.")

# %% [markdown]
# ## 1. Quality and cost of every head
#
# Mean ± std of the metric over seeds, the number of finished runs `n`, and the head's cost
# measured the same way for every head (forward GFLOPs at the training input size and batch 1;
# forward+backward latency and peak memory at the training batch). Differences smaller than the
# std are not differences.

# %%
summary = analysis.summarize(runs, METRIC)
display(analysis.format_table(summary, METRIC))

# %% [markdown]
# The other numbers mmseg's IoU metric reports, from the same confusion matrix at the end of each
# run: mean class accuracy, overall pixel accuracy and mean Dice (mean ± std over seeds; runs made
# before these columns existed have none).

# %%
others = analysis.other_metrics(runs)
if len(others):
    display(others)
else:
    print("No mAcc / aAcc / mDice columns in these runs.")

# %% [markdown]
# Quality against cost, one point per experiment (error bars: std over seeds). The heads worth
# having sit up and to the left; anything below FCN's line does not pay for its context.

# %%
COSTS = [("head_gflops", "head GFLOPs (forward)"), ("head_fwdbwd_ms", "head forward+backward (ms)"),
         ("head_peak_mib", "head peak memory (MiB)")]
plotted = summary[summary["n"] > 0]
panels = [(column, label) for column, label in COSTS if plotted[column].notna().any()]
heads = plotted["head"].fillna("?")
colors = {h: plt.cm.tab10(i % 10) for i, h in enumerate(dict.fromkeys(heads))}

if not panels:
    print("No cost columns (head_gflops, head_fwdbwd_ms, head_peak_mib) in these runs: no cost plot.")
else:
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), sharey=True, squeeze=False)
    for ax, (column, label) in zip(axes[0], panels):
        for name, row in plotted[plotted[column].notna()].iterrows():
            ax.errorbar(row[column], row["mean"], yerr=0 if pd.isna(row["std"]) else row["std"], fmt="o",
                        capsize=3, color=colors[heads[name]])
            ax.annotate(name, (row[column], row["mean"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if "fcn" in plotted.index:
            ax.axhline(plotted.loc["fcn", "mean"], color="grey", lw=0.8, ls="--")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"{METRIC} (mean ± std over seeds)")
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=h) for h, c in colors.items()]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), frameon=False,
               bbox_to_anchor=(0.5, -0.08))
    fig.suptitle("Quality against cost (dashed: fcn)" if "fcn" in plotted.index else "Quality against cost")
    fig.tight_layout()
    plt.show()


# %% [markdown]
# ## 2. Do attention heads beat FCN?
#
# Each experiment against the FCN baseline: `Δ` is the difference of the means, `t` Welch's
# statistic, Δ / sqrt(s₁²/n₁ + s₂²/n₂). With 2–3 seeds per side, treat |t| below about 3 as a
# difference the seeds do not resolve.

# %%
def show(experiments: list[str], baseline: str, what: str) -> None:
    """Compare ``experiments`` with ``baseline``, or say that the ablation lacks them."""
    table = analysis.compare(summary, experiments, baseline=baseline)
    if baseline not in table.index or len(table) < 2:
        others = ", ".join(e for e in experiments if e != baseline)
        print(f"{what}: needs {baseline} and at least one of {others}; "
              f"this ablation has {', '.join(table.index) or 'none of them'}.")
    else:
        display(table)


show(list(summary.index), "fcn", "Attention vs FCN")

# %% [markdown]
# ## 3. CCNet: does R = 2 beat R = 1?
#
# One criss-cross step connects a pixel to its row and column; two steps connect it to the whole
# image. Left: mIoU ± std against R. Right: the head's cost relative to R = 1 (each recurrence
# runs the same attention once more, with the same weights).

# %%
curve = analysis.ccnet_curve(runs, METRIC)
if curve.empty:
    print("No CCNet (CCHead) runs with a recurrence in this ablation: no curve.")
else:
    display(curve.round(4))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    measured = curve[curve["n"] > 0]
    left.errorbar(measured.index, measured["mean"], yerr=measured["std"].fillna(0), fmt="o-", capsize=4)
    if "fcn" in summary.index and summary.loc["fcn", "n"] > 0:
        left.axhline(summary.loc["fcn", "mean"], color="grey", ls="--", lw=0.8, label="fcn")
        left.legend()
    left.set(xlabel="recurrence R", ylabel=f"{METRIC} (mean ± std)", xticks=curve.index, title="quality")
    for column, label in COSTS:
        values = curve[column]
        if values.notna().any() and pd.notna(values.iloc[0]) and values.iloc[0] > 0:
            right.plot(curve.index, values / values.iloc[0], "o-", label=label)
    right.set(xlabel="recurrence R", ylabel=f"cost relative to R = {curve.index[0]}", xticks=curve.index,
              title="cost")
    if right.lines:
        right.legend(fontsize=8)
    else:
        right.text(0.5, 0.5, "no cost columns", ha="center", va="center", transform=right.transAxes)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    plt.show()
    if len(curve) > 1:
        show([f"ccnet_r{r}" for r in curve.index], f"ccnet_r{curve.index[0]}", "CCNet by recurrence")
    else:
        print(f"Only R = {curve.index[0]} in this ablation: nothing to compare it with.")

# %% [markdown]
# ## 4. Global context vs non-local: same quality for less?
#
# GCNet's claim is that the non-local block's attention map is nearly the same for every query,
# so one query-independent context vector does as well for a fraction of the cost.

# %%
show(["nonlocal", "nonlocal_dot", "gc", "gc_backbone"], "nonlocal", "GC vs non-local")

# %% [markdown]
# ## 5. OCNet variants and DANet branches
#
# OCNet: the base object-context block, against Pyramid-OC (context per pyramid region) and
# ASP-OC (object context as one branch of ASPP). DANet: both branches against the position
# (PAM, spatial attention) and channel (CAM) branches alone.

# %%
show(["oc_base", "oc_pyramid", "oc_asp"], "oc_base", "OCNet variants")
show(["danet", "danet_pam", "danet_cam"], "danet", "DANet branches")

# %% [markdown]
# ## 6. Per-class IoU
#
# The last validation's IoU per class, mean over seeds. On the built-in data set every object
# looks alike and its class is the cue's colour, so a head without long-range context shows up
# as low IoU on the `object_*` classes while `background` stays high.

# %%
classes = analysis.per_class(runs, METRIC)
if classes.empty:
    print("No per-class IoU columns (IoU/<class>) in these runs.")
else:
    fig, ax = plt.subplots(figsize=(1.2 * classes.shape[1] + 3, 0.45 * classes.shape[0] + 1.5))
    image = ax.imshow(classes.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(classes.shape[1]), classes.columns, rotation=30, ha="right")
    ax.set_yticks(range(classes.shape[0]), classes.index)
    for (i, j), value in np.ndenumerate(classes.to_numpy(dtype=float)):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if value > 0.6 else "white")
    fig.colorbar(image, ax=ax, label="IoU (mean over seeds)")
    ax.set_title("Per-class IoU, last validation")
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## 7. Where does the attention look?
#
# One overlay per experiment with attention on this task, from its run folder (`attention/epoch{N}_{i}.png`,
# written by the `AttentionMapLogger` callback): the lowest seed's last epoch, first image, drawn small
# (the notebook is committed with its outputs). The task suite's, every head on every task at full
# size: `docs/attention-maps.md` (`scripts/attention_figures.py`).

# %%
gallery = analysis.attention_gallery(runs, RUNS_ROOT, METRIC)
if gallery.empty:
    print(f"No attention maps found in the run folders under {relative(RUNS_ROOT) or '.'} (heads without attention, "
          "runs from another machine, or W&B runs without a local folder): no gallery.")
else:
    images = [Image.open(path) for path in gallery["path"]]
    height = sum(12 * im.height / im.width + 0.4 for im in images)  # one overlay per row, 12 inches wide
    fig, axes = plt.subplots(len(images), 1, figsize=(12, height), dpi=50, squeeze=False)
    for ax, im, item in zip(axes[:, 0], images, gallery.itertuples()):
        ax.imshow(im)
        ax.axis("off")
        where = f" on {item.task}" if item.task else ""
        ax.set_title(f"{item.experiment}{where} (seed {item.seed}, epoch {item.epoch})", fontsize=10, loc="left")
    fig.tight_layout()
    plt.show()
