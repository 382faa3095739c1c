"""``lit-seg check-data``: every file of a data set read once, before any training.

    lit-seg check-data --config experiments/cityscapes/ccnet_r2.yaml [--data.init_args.root DIR]
                       [--splits train val] [--workers 8]

Takes the same ``--config`` files and ``--data`` arguments as ``lit-seg fit`` (resolved by
:func:`lit_seg.api.resolve`: nothing built or trained, no run folder) and checks every (image, mask) pair
of the train and validation splits (and test, if another one) with
:func:`lit_seg.data.check.check_dataset`. Each bad file is one ``lit-seg: error: ...`` line, the
same line training would stop with; a mask without labelled pixels is a ``lit-seg: warning:`` (it
adds nothing to training, the loss gives 0 for it). Exit status 2 if any file is bad, else 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from lit_seg import api
from lit_seg.data.check import check_dataset
from lit_seg.errors import ConfigError


def main(argv: Sequence[str]) -> int:
    """``lit-seg check-data ARGS``: the exit status (0 all good, 2 a bad file or a bad argument)."""
    parser = argparse.ArgumentParser(prog="lit-seg check-data", description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s --config EXPERIMENT.yaml [--data.* ...] [--splits S ...] "
                                           "[--workers N]")
    parser.add_argument("--splits", nargs="+", help="splits to check (default: the data module's train, val and "
                                                    "test splits)")
    parser.add_argument("--workers", type=int, help="reader threads (default: cores, at most 8)")
    args, rest = parser.parse_known_args(list(argv))
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    data = api.resolve(overrides=rest).get("data") or {}
    init = data.get("init_args") or {}
    if not {"dataset", "root"} <= set(init):
        print(f"lit-seg: check-data: {data.get('class_path')} reads no files (the built-in data set is drawn, not "
              f"read): nothing to check", file=sys.stderr)
        return 0
    splits = args.splits or [init.get(k) or d for k, d in
                             (("train_split", "train"), ("val_split", "val"), ("test_split", "val"))]
    start = time.monotonic()
    count, errors, warnings = check_dataset(init["dataset"], init["root"], splits, args.workers)
    took = time.monotonic() - start
    print(f"lit-seg: check-data: {count} image/mask pairs of {init['dataset']} at {init['root']} "
          f"({', '.join(dict.fromkeys(splits))}) read in {took:.1f} s ({count / max(took, 1e-9):.1f} pairs/s): "
          f"{errors} bad, {warnings} without labelled pixels", file=sys.stderr)
    return 2 if errors else 0
