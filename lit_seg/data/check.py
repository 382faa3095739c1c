"""``lit-seg check-data``: every file of a data set read once, before any training.

    lit-seg check-data --config experiments/cityscapes/ccnet_r2.yaml [--data.init_args.root DIR]
                       [--splits train val] [--workers 8]

Takes the same ``--config`` files and ``--data`` arguments as ``lit-seg fit`` (the rest of the
config is parsed, not built) and, for every (image, mask) pair of the train and validation splits
(and test, if another one): the image decodes whole (a truncated file fails), the mask decodes, is
single-channel, has its image's size and holds only values of the data set's classes or ignore,
and at least one pixel is labelled. Each bad file is one ``lit-seg: error: ...`` line, the same
line training would stop with; a mask without labelled pixels is a ``lit-seg: warning:`` (it adds
nothing to training, the loss gives 0 for it). Exit status 2 if any file is bad, else 0; no run
folder is made. Files are read by a pool of threads (the decoders release the GIL).
"""

from __future__ import annotations

import os
import sys
import time
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


def main(argv: Sequence[str]) -> int:
    """``lit-seg check-data ARGS``: the exit status (0 all good, 2 a bad file or a bad argument)."""
    from lit_seg.cli import LitSegCLI

    class DataArgsCLI(LitSegCLI):
        """The fit command's parser, to read ``--config`` and ``--data``; builds nothing, makes no folder."""

        def add_arguments_to_parser(self, parser) -> None:
            super().add_arguments_to_parser(parser)
            parser.add_argument("--splits", type=list[str] | None, default=None,
                                help="splits to check (default: the data module's train, val and test splits)")
            parser.add_argument("--workers", type=int | None, default=None,
                                help="reader threads (default: cores, at most 8)")

        def _set_seed(self) -> None:
            pass

        def before_instantiate_classes(self) -> None:
            pass

        def instantiate_classes(self) -> None:
            pass

        def after_instantiate_classes(self) -> None:
            pass

    sys.argv = [sys.argv[0], *argv]  # through sys.argv, not args=: LightningCLI warns when it is given both
    cli = DataArgsCLI(run=False)
    data = cli.config.data
    init = data.init_args.as_dict() if hasattr(data.init_args, "as_dict") else dict(data.init_args or {})
    if not {"dataset", "root"} <= set(init):
        print(f"lit-seg: check-data: {data.class_path} reads no files (the built-in data set is drawn, not read): "
              f"nothing to check", file=sys.stderr)
        return 0
    splits = cli.config.get("splits") or [init.get(k, d) for k, d in
                                          (("train_split", "train"), ("val_split", "val"), ("test_split", "val"))]
    workers = cli.config.get("workers")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    start = time.monotonic()
    count, errors, warnings = check_dataset(init["dataset"], init["root"], splits, workers)
    took = time.monotonic() - start
    print(f"lit-seg: check-data: {count} image/mask pairs of {init['dataset']} at {init['root']} "
          f"({', '.join(dict.fromkeys(splits))}) read in {took:.1f} s ({count / max(took, 1e-9):.1f} pairs/s): "
          f"{errors} bad, {warnings} without labelled pixels", file=sys.stderr)
    return 2 if errors else 0
