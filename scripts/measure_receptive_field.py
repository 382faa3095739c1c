"""The exact receptive fields the built-in tasks are laid out against, into results/receptive_field.csv.

    scripts/run python scripts/measure_receptive_field.py

Per (experiment, task): how far above, below, left and right of an output pixel the input pixels it
depends on reach, with random weights (the support of its input gradient, the largest over the 8 x 8
positions of a stride-8 cell; `lit-seg receptive-field` prints the same for one experiment). The
tasks keep every object farther than that from every cue the head must not see
(tests/unit/test_tasks.py checks it on 300 samples per task through the real network).
"""

import argparse
import csv
from pathlib import Path

import torch

from lit_seg.study.harness import experiment_head
from lit_seg.study.receptive_field import extents, open_attention_paths

ROOT = Path(__file__).resolve().parents[1]
# FCN on the quick start's task: the field every task's margin (88 px) is set against.
CASES = [("fcn", "reach")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=ROOT / "results", help="folder of receptive_field.csv")
    args = parser.parse_args()
    rows = []
    for experiment, task in CASES:
        torch.manual_seed(0)
        config = str(ROOT / "experiments" / f"{experiment}.yaml")
        _, _, model, size = experiment_head(config, ["--data.init_args.task", task], batch=1)
        field = extents(open_attention_paths(model), size)
        rows.append({"experiment": experiment, "task": task, "height": size[0], "width": size[1], **field})
        print(rows[-1])
    out = args.output_dir / "receptive_field.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
