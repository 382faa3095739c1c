"""An ablation's results CSV as a markdown table and a plot (what the README shows).

    lit-seg report results/all_heads.csv
    # -> results/all_heads.md (mean ± std over seeds, query dependence, costs) and results/all_heads.png

``lit-seg ablate`` writes both at the end of every call; this redoes them from the CSV.
The plot: best val/mIoU (mean ± std over seeds) against the head's forward GFLOPs per image and
its forward+backward latency at the training batch; the dashed line is FCN's mean.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from lit_seg.study import analysis


def markdown_table(csv_path: Path, metric: str = analysis.METRIC) -> str:
    runs = analysis.load_csv(csv_path)
    summary = analysis.summarize(runs, metric)
    table = analysis.format_table(summary, metric)
    table = table.drop(columns=[c for c in ("params",) if c in table])
    header = ["experiment", *table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for experiment, row in table.iterrows():
        cells = [f"`{experiment}`", *(str(v) for v in row.tolist())]
        lines.append("| " + " | ".join(cells) + " |")
    finished = analysis.finished(runs, metric)
    note = (f"{len(finished)} finished runs of {runs['experiment'].nunique()} experiments "
            f"({len(runs) - len(finished)} failed or unfinished); {metric.replace('val_', 'val/')}: best "
            "validation mIoU of each run, mean ± sample std over seeds; head costs at the training batch "
            "(GFLOPs per image).")
    if "query_dependence_mean" in summary:
        note += (" Query dependence: mean cosine distance between the attention maps of different query "
                 "positions at the end of each run (0: every query attends alike; lit_seg/query_dependence.py), "
                 "mean ± std over seeds; – for heads without attention maps.")
    return "\n".join(lines) + "\n\n" + note + "\n"


def plot(csv_path: Path, out: Path, metric: str = analysis.METRIC) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = analysis.summarize(analysis.load_csv(csv_path), metric)
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


def report(csv_path: Path) -> tuple[Path, Path]:
    md, png = csv_path.with_suffix(".md"), csv_path.with_suffix(".png")
    md.write_text(f"# {csv_path.stem}\n\n" + markdown_table(csv_path))
    plot(csv_path, png)
    return md, png


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lit-seg report", description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", type=Path, nargs="+", help="results/<ablation>.csv")
    args = parser.parse_args(argv)
    for path in args.csv:
        md, png = report(path)
        print(f"{md}\n{png}")


if __name__ == "__main__":
    main()
