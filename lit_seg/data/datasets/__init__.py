"""File-backed segmentation data sets in their official on-disk layouts.

``build_dataset(name, root, split)`` is the entry point; each data set also has its class, e.g.
``CityscapesDataset(root, split)``. Every item is ``(image, mask)``: float32 (3, H, W) in [0, 1]
and int64 (H, W) train ids with 255 for ignore.
"""

from pathlib import Path
from typing import Literal

from lit_seg.data.datasets.ade20k import ADE20KDataset
from lit_seg.data.datasets.base import IGNORE_INDEX, SegmentationDataset, Transform
from lit_seg.data.datasets.cityscapes import CityscapesDataset
from lit_seg.data.datasets.folder import FolderDataset
from lit_seg.data.datasets.voc import VOCDataset
from lit_seg.errors import ConfigError

DATASETS: dict[str, type[SegmentationDataset]] = {
    "cityscapes": CityscapesDataset,
    "voc": VOCDataset,
    "ade20k": ADE20KDataset,
    "folder": FolderDataset,
}
# The names as a type, built from DATASETS (not a second list): the CLI checks `data.init_args.dataset`
# against it and `--help` lists the choices.
DatasetName = Literal[tuple(DATASETS)]


def build_dataset(name: str, root: str | Path, split: str, transform: Transform | None = None) -> SegmentationDataset:
    """The data set ``name`` (one of ``DATASETS``) read from ``root``, split ``split``.

    Raises:
        ConfigError: unknown name, missing root, malformed layout, unknown split, no samples,
            or an image without its mask.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown data set {name!r} (root {root}); valid names: {', '.join(DATASETS)}")
    return DATASETS[name](root, split, transform)


__all__ = [
    "ADE20KDataset",
    "CityscapesDataset",
    "DATASETS",
    "DatasetName",
    "FolderDataset",
    "IGNORE_INDEX",
    "SegmentationDataset",
    "VOCDataset",
    "build_dataset",
]
