"""Every file of a data set read once, before any training (``lit-seg check-data``,
:mod:`lit_seg.study.check_data`): for every (image, mask) pair the image decodes whole (a truncated
file fails), the mask decodes, is single-channel, has its image's size and holds only values of the
data set's classes or ignore, and at least one pixel is labelled. Files are read by a pool of
threads (the decoders release the GIL).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from lit_seg.data.datasets import build_dataset
from lit_seg.data.datasets.base import SegmentationDataset, check_sizes, decode_rgb, read_mask
from lit_seg.errors import ConfigError


def check_sample(dataset: SegmentationDataset, image_path: Path, mask_path: Path) -> tuple[str | None, str | None]:
    """(error, warning) for one pair: the ConfigError line training would raise, or a mask with no label."""
    try:
        image = decode_rgb(image_path)
        mask = dataset.map_labels(read_mask(mask_path), mask_path)
        check_sizes(image.shape[-2:], mask.shape, image_path, mask_path)
    except ConfigError as err:
        return " ".join(str(err).split()), None
    if not bool((mask != dataset.ignore_index).any()):
        return None, (f"mask {mask_path} has no labelled pixel (every value is ignore, {dataset.ignore_index}): "
                      f"its image {image_path} adds nothing to training; annotate it or remove it")
    return None, None


def check_dataset(name: str, root: str, splits: Sequence[str], workers: int | None = None,
                  out=sys.stderr) -> tuple[int, int, int]:
    """Checks every pair of ``splits``; prints one line per problem; returns (pairs, errors, warnings)."""
    workers = workers or min(8, os.cpu_count() or 1)
    datasets = [build_dataset(name, root, split) for split in dict.fromkeys(splits)]
    pairs = [(ds, image, mask) for ds in datasets for image, mask in ds.samples]
    pairs = list({(image, mask): (ds, image, mask) for ds, image, mask in pairs}.values())  # splits may share files
    errors = warnings = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one file per thread; no intra-op threads on top of them
    try:
        with ThreadPoolExecutor(workers) as pool:
            for error, warning in pool.map(lambda pair: check_sample(*pair), pairs):
                if error:
                    errors += 1
                    print(f"lit-seg: error: {error}", file=out, flush=True)
                if warning:
                    warnings += 1
                    print(f"lit-seg: warning: {warning}", file=out, flush=True)
    finally:
        torch.set_num_threads(threads)
    return len(pairs), errors, warnings
