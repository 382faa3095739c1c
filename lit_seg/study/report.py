"""An ablation's results CSV as a markdown table and a plot (what the README shows).

    lit-seg report results/tasks.csv
    # -> results/tasks.md (the task profile, query dependence, costs) and results/tasks.png

``lit-seg ablate`` writes both at the end of every call; this redoes them from the CSV.
``--against results/<other>.csv`` also writes ``results/<ablation>_vs_<other>.md``: the two side by
side per head and task, marked where they differ (the suite in bf16 against fp32, say).
The plot: best val/mIoU (mean ± std over seeds) against the head's forward GFLOPs per image and
its forward+backward latency at the training batch; the dashed line is FCN's mean.

An ablation over tasks (runs with a ``task``) gets the task profile instead: heads x tasks, whether
each head can learn each task and how reliably (the per-seed values, the median, how many seeds
learn it: :func:`lit_seg.study.analysis.capacity_profile`), then final val/mIoU (mean ± std over
seeds) marked where a head differs from FCN on that task, the query dependence per head and task,
and the per-experiment table of each task; its plot is the capacity profile as a heatmap.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lit_seg.api.records import is_stale
from lit_seg.study import analysis


def markdown_table(csv_path: Path, metric: str = analysis.METRIC) -> str:
    """The report's text: the per-experiment table, or for an ablation over tasks the task profile
    and one such table per task."""
    runs = analysis.load_csv(csv_path)
    return _task_report(runs, metric) if analysis.has_tasks(runs) else _experiment_table(runs, metric)


def _markdown(table: pd.DataFrame) -> str:
    """Rows of experiments as a markdown table (names as code)."""
    header = ["experiment", *table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for experiment, row in table.iterrows():
        cells = [f"`{experiment}`", *(str(v) for v in row.tolist())]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _experiment_table(runs: pd.DataFrame, metric: str) -> str:
    summary = analysis.summarize(runs, metric)
    table = analysis.format_table(summary, metric)
    table = table.drop(columns=[c for c in ("params",) if c in table])
    finished = analysis.finished(runs, metric)
    note = (f"{len(finished)} finished runs of {runs['experiment'].nunique()} experiments "
            f"({len(runs) - len(finished)} failed or unfinished); {metric.replace('val_', 'val/')}: best "
            "validation mIoU of each run, mean ± sample std over seeds; head costs at the training batch "
            "(GFLOPs per image).")
    if "query_dependence_mean" in summary:
        note += (" Query dependence: mean cosine distance between the attention maps of different query "
                 "positions at the end of each run (0: every query attends alike; "
                 "lit_seg.inference.query_dependence), "
                 "mean ± std over seeds; – for heads without attention maps.")
    return _markdown(table) + "\n\n" + note + "\n"


def _task_report(runs: pd.DataFrame, metric: str) -> str:
    capacity = analysis.capacity_profile(runs)  # of the final val/mIoU (analysis.PROFILE_METRIC)
    thresholds = analysis.learning_thresholds(runs)
    told = ", ".join(f"{task}: chance {row['chance']:.3f}, oracle {row['oracle']:.3f}, "
                     f"learnt at ≥ {row['threshold']:.3f}"
                     for task, row in thresholds.iterrows() if not pd.isna(row["threshold"]))
    mixed = analysis.mixed_cells(capacity)
    parts = ["## Can each head learn each task, and how reliably\n", _markdown(analysis.format_capacity(capacity)),
             f"\nEach cell: the median final val/mIoU over seeds, [each seed's, in seed order], how many seeds learn "
             f"the task; ✓: learnt reliably, ~: by some seeds only; ↑ / ↓: the mean differs from FCN's by the rule "
             f"below. The rule: {analysis.LEARNT_RULE}. Per task: {told or 'no baseline'}."
             + (f" Seeds disagree in {len(mixed)} cells: "
                f"{', '.join(f'{e} on {t}' for e, t in mixed)}." if mixed else "") + "\n"]
    profile = analysis.task_profile(runs)
    parts += ["## Task profile: final val/mIoU per head and task\n", _markdown(analysis.format_profile(profile)),
             "\nEach cell: val/mIoU at the end of each run, mean ± sample std over seeds (n seeds). ↑ / ↓: "
             f"different from FCN on that task, above / below it (the project's rule: {analysis.DIFFERENCE_RULE}); "
             "unmarked: not a difference, or fewer than 2 seeds on a side.\n"]
    dependence = analysis.query_dependence_profile(profile)
    if len(dependence):
        parts += ["## Query dependence per head and task\n", _markdown(dependence),
                  "\nMean cosine distance between the attention maps of different query positions at the end of "
                  "each run (0: every query attends alike; lit_seg.inference.query_dependence), mean over "
                  "seeds; – for "
                  "heads without attention maps.\n"]
    for task in analysis.tasks(runs):
        parts += [f"## Task {task or '(none)'}\n", _experiment_table(runs[runs["task"] == task], metric)]
    return "\n".join(parts)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(csv_path: Path, out: Path, metric: str = analysis.METRIC) -> None:
    runs = analysis.load_csv(csv_path)
    if analysis.has_tasks(runs):
        _plot_tasks(runs, csv_path.stem, out)
        return
    plt = _pyplot()
    summary = analysis.summarize(runs, metric)
    summary = summary[summary["n"] > 0]
    panels = [("head_gflops", "head GFLOPs per image (forward)"),
              ("head_fwdbwd_ms", "head forward+backward (ms, training batch)")]
    panels = [(c, label) for c, label in panels if c in summary and summary[c].notna().any()]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(6.5 * max(1, len(panels)), 5), squeeze=False)
    for ax, (column, label) in zip(axes[0], panels):
        for experiment, row in summary.iterrows():
            ax.errorbar(row[column], row["mean"], yerr=0 if row["std"] != row["std"] else row["std"], fmt="o",
                        capsize=3)
            ax.annotate(experiment, (row[column], row["mean"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
        if "fcn" in summary.index:
            ax.axhline(summary.loc["fcn", "mean"], color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel(label)
        ax.set_ylabel(f"{metric.replace('val_', 'val/')} (mean ± std over seeds)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{csv_path.stem}: accuracy against cost (dashed: FCN)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _plot_tasks(runs: pd.DataFrame, name: str, out: Path) -> None:
    """The task profile as a heatmap: heads x tasks, coloured by the median final val/mIoU, each
    cell with its per-seed values, how many seeds learn the task and the marks of
    :func:`analysis.format_capacity`."""
    plt = _pyplot()
    capacity = analysis.capacity_profile(runs)
    experiments = list(dict.fromkeys(capacity.index.get_level_values("experiment")))
    names = analysis.tasks(runs)
    medians = np.full((len(experiments), len(names)), np.nan)
    for (experiment, task), row in capacity.iterrows():
        medians[experiments.index(experiment), names.index(task)] = row["median"]
    fig, ax = plt.subplots(figsize=(3.2 * len(names) + 2.5, 0.42 * len(experiments) + 1.6))
    image = ax.imshow(medians, cmap="viridis", vmin=np.nanmin(medians), vmax=np.nanmax(medians), aspect="auto")
    for (experiment, task), row in capacity.iterrows():
        if not row["values"]:
            continue
        i, j = experiments.index(experiment), names.index(task)
        learnt, mark, arrow = analysis.capacity_marks(row)
        text = f"{row['median']:.2f}{arrow}{learnt}{mark}\n" + " ".join(f"{v:.2f}" for v in row["values"])
        light = medians[i, j] < (np.nanmin(medians) + np.nanmax(medians)) / 2
        ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if light else "black")
    ax.set_xticks(range(len(names)), [t or "(no task)" for t in names])
    ax.set_yticks(range(len(experiments)), experiments)
    ax.xaxis.tick_top()
    fig.colorbar(image, ax=ax, label="median final val/mIoU over seeds", fraction=0.04)
    fig.suptitle(f"{name}: can each head learn each task? (median, seeds learnt, per-seed values; "
                 f"✓ reliably, ~ some seeds; ↑/↓ vs FCN)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def stale_note(csv_path: Path) -> str:
    """The rows whose model code changed since they were made (their modules' code hash differs from
    today's), which the tables above still count; empty when there are none."""
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    stale = [row for row in rows if row.get("model_code_hash") and
             is_stale({"hash": row["model_code_hash"], "modules": (row.get("model_code_modules") or "").split()})]
    if not stale:
        return ""
    names = ", ".join(f"{r['experiment']}{' on ' + r['task'] if r.get('task') else ''} seed {r['seed']}" for r in stale)
    return (f"\n## Stale runs\n\n{len(stale)} of {len(rows)} runs were made by model code that has changed since "
            f"(their model modules' code hash differs from today's): {names}. They are counted above as they are; "
            f"`lit-seg ablate <ablation> --rerun-stale` runs them again.\n")


def report(csv_path: Path) -> tuple[Path, Path]:
    md, png = csv_path.with_suffix(".md"), csv_path.with_suffix(".png")
    md.write_text(f"# {csv_path.stem}\n\n" + markdown_table(csv_path) + stale_note(csv_path))
    plot(csv_path, png)
    return md, png


def comparison(csv_path: Path, against: Path) -> Path:
    """``<csv>_vs_<against>.md`` beside ``csv_path``: both ablations' final val/mIoU per head and task,
    and where they differ by the project's rule (:func:`analysis.compare_profiles`)."""
    table = analysis.compare_profiles(analysis.load_csv(csv_path), analysis.load_csv(against))
    out = csv_path.with_name(f"{csv_path.stem}_vs_{against.stem}.md")
    n = int((table["vs_other"].abs() == 1).sum())
    told = int(table["vs_other"].notna().sum())
    out.write_text(
        f"# {csv_path.stem} against {against.stem}\n\n" + _markdown(analysis.format_comparison(table)) +
        f"\n\nEach cell: final val/mIoU of `{csv_path.stem}` vs `{against.stem}`, mean ± sample std over seeds, "
        f"and the difference of the means. ↑ / ↓: {csv_path.stem} above / below {against.stem} (the project's rule: "
        f"{analysis.DIFFERENCE_RULE}). {n} of {told} pairs with 2 or more seeds on both sides differ.\n")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lit-seg report", description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", type=Path, nargs="+", help="results/<ablation>.csv")
    parser.add_argument("--against", type=Path, metavar="CSV",
                        help="also compare each CSV with this one (the same suite in another precision, or before a "
                             "change): writes results/<csv>_vs_<against>.md")
    args = parser.parse_args(argv)
    for path in args.csv:
        md, png = report(path)
        print(f"{md}\n{png}")
        if args.against:
            print(comparison(path, args.against))


if __name__ == "__main__":
    main()
