"""Every attention head's attention maps on every task of an ablation, as committed figures and the
docs page that shows them (docs/attention-maps.md).

    scripts/run python scripts/attention_figures.py

For each head and task of the results CSV (default ``results/tasks.csv``): the finished run with the
lowest seed, its last epoch's overlay of validation image 0, as the ``AttentionMapLogger`` callback
drew it during training (:func:`lit_seg.study.analysis.attention_gallery`), copied with 256 colours
to ``results/figures/attention/<task>/<experiment>.png``. It needs the run folders the CSV names
(they are not committed): run it where the ablation ran.
"""

import argparse
import shutil
from pathlib import Path

from PIL import Image

from lit_seg.data.synthetic import TASKS
from lit_seg.study import analysis

ROOT = Path(__file__).resolve().parents[1]
FIGURES = Path("results/figures/attention")
PAGE = Path("docs/attention-maps.md")

INTRO = """# Attention maps

Where each attention head looks once trained, on each built-in task
([Data](data.md#built-in-tasks-labels-that-need-context) says what each task needs): for every head
and task of the task suite (`{csv}`; DANet's CAM attends over channels and draws no spatial map),
the run with the lowest seed, its last epoch's picture of
validation image 0, drawn by the `AttentionMapLogger` callback during training. In each row: the
image with the query point (+, its (row, col) above), the prediction, the target, then each of the
head's maps for that query, named and scaled to its own maximum in its title (CCNet: each step's
cross and their composition). The run's final val/mIoU is beside each name. Made by
`scripts/run python scripts/attention_figures.py` from the run folders; `lit-seg maps` draws the
same for any trained model and chosen points ([Using a model](using-a-model.md)).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=Path("results/tasks.csv"), help="the ablation's results CSV")
    parser.add_argument("--runs_root", type=Path, default=ROOT, help="the folder the CSV's run folders are under")
    args = parser.parse_args()

    runs = analysis.load_csv(ROOT / args.csv)
    gallery = analysis.attention_gallery(runs, args.runs_root)
    if gallery.empty:
        raise SystemExit(f"no attention images in the run folders of {args.csv} under {args.runs_root}: "
                         "run this where the ablation ran")
    shutil.rmtree(ROOT / FIGURES, ignore_errors=True)
    lines = [INTRO.format(csv=args.csv)]
    order = [t for t in TASKS if t in set(gallery["task"])] + sorted(set(gallery["task"]) - set(TASKS))
    for task in order:
        lines.append(f"## {task or '(no task)'}\n")
        for item in gallery[gallery["task"] == task].itertuples():
            out = FIGURES / (task or "no_task") / f"{item.experiment}.png"
            (ROOT / out).parent.mkdir(parents=True, exist_ok=True)
            Image.open(item.path).convert("RGB").quantize(colors=256).save(ROOT / out, optimize=True)
            run = runs[(runs["experiment"] == item.experiment) & (runs["task"].fillna("") == task)
                       & (runs["seed"] == item.seed) & (runs["status"] == "finished")]
            value = float(run["val_mIoU_final"].iloc[0])
            filters = [f"experiment={item.experiment}", *([f"task={task}"] if task else []), f"seed={item.seed}"]
            where = " ".join(filters)
            lines.append(f"**`{item.experiment}`**, seed {item.seed}, epoch {item.epoch}, final val/mIoU "
                         f"{value:.3f}<!-- csv: {args.csv} {where} val_mIoU_final value -->\n")
            lines.append(f"![{item.experiment} on {task}]({out})\n")
    (ROOT / PAGE).write_text("\n".join(lines))
    print(f"wrote {len(gallery)} figures under {FIGURES}/ and {PAGE}")


if __name__ == "__main__":
    main()
