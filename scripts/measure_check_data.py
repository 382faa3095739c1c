"""How fast `lit-seg check-data` reads a Cityscapes-sized data set (run it on a quiet machine).

    scripts/run python scripts/measure_check_data.py [--frames 60] [--workers 1 2]

Writes ``--frames`` 1024x2048 frames in the official Cityscapes layout into a temporary folder
(photo-like images: smooth gradients and texture, about the size of real Cityscapes PNGs; label-id
masks of large regions), then times ``lit-seg check-data`` on them for each ``--workers`` value, in
a fresh process, and prints pairs per second and the time the 3475 train + val frames would take.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CITYSCAPES_TRAIN_VAL = 2975 + 500


def write_frames(root: Path, frames: int) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1024, 0:2048].astype(np.float32)
    for i in range(frames):
        city, frame = f"city{i % 3}", f"city{i % 3}_{i:06d}_000019"
        base = np.stack([xx / 8 + 40 * i, yy / 4 + 20 * i, (xx + yy) / 12], axis=-1) % 256
        image = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        labels = ((xx // 256 + yy // 256 * 8 + i) % 34).astype(np.uint8)
        for kind, suffix, data in (("leftImg8bit", "leftImg8bit", image), ("gtFine", "gtFine_labelIds", labels)):
            path = root / kind / "train" / city / f"{frame}_{suffix}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(data).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cityscapes"
        write_frames(root, args.frames)
        size = sum(p.stat().st_size for p in (root / "leftImg8bit").rglob("*.png")) / args.frames / 2**20
        print(f"{args.frames} frames, image PNGs {size:.1f} MiB each")
        for workers in args.workers:
            command = [sys.executable, "-m", "lit_seg", "check-data", "--config",
                       str(ROOT / "experiments" / "cityscapes" / "ccnet_r2.yaml"), "--data.init_args.root", str(root),
                       "--splits", "[train]", "--workers", str(workers)]
            start = time.perf_counter()
            done = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                sys.exit(f"check-data failed:\n{done.stderr[-2000:]}")
            rate = args.frames / seconds
            minutes = CITYSCAPES_TRAIN_VAL / rate / 60
            print(f"workers {workers}: {seconds:.1f} s (start-up included), {rate:.1f} pairs/s; "
                  f"Cityscapes train + val ({CITYSCAPES_TRAIN_VAL} pairs): about {minutes:.1f} min")


if __name__ == "__main__":
    main()
