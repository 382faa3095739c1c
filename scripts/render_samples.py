"""Render samples of a built-in task (image above, label below) into one PNG.

    scripts/run python scripts/render_samples.py --task reach
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from lit_seg.data.synthetic import PALETTE, TASKS, ContextCueDataset


def label_colors(dataset: ContextCueDataset) -> np.ndarray:
    colors = np.zeros((256, 3), dtype=np.uint8)
    for k, name in enumerate(dataset.colors, start=1):
        colors[k] = (np.asarray(PALETTE[name]) * 255).astype(np.uint8)
    colors[dataset.ignore_index] = (255, 255, 255)  # the cue: ignored in loss and metrics
    return colors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--task", choices=TASKS, default="reach")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--output_dir", type=Path, default=Path("results/figures"), help="folder of task_<task>.png")
    args = parser.parse_args()
    args.out = args.output_dir / f"task_{args.task}.png"

    dataset = ContextCueDataset(args.count, seed=args.seed, task=args.task)
    colors = label_colors(dataset)
    gap = 4
    columns = []
    for i in range(args.count):
        image, mask = dataset[i]
        rgb = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        separator = np.full((gap, rgb.shape[1], 3), 255, dtype=np.uint8)
        columns += [np.concatenate([rgb, separator, colors[mask.numpy()]]),
                    np.full((2 * dataset.height + gap, gap, 3), 255, np.uint8)]
    grid = Image.fromarray(np.concatenate(columns[:-1], axis=1))
    grid = grid.resize((grid.width * args.scale, grid.height * args.scale), Image.NEAREST)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
