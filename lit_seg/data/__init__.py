"""Data sets and data modules."""

from lit_seg.data.datamodule import SegmentationDataModule, SyntheticDataModule
from lit_seg.data.datasets import DATASETS, SegmentationDataset, build_dataset
from lit_seg.data.synthetic import ContextCueDataset
from lit_seg.data.transforms import eval_transform, train_transform

__all__ = [
    "ContextCueDataset",
    "DATASETS",
    "SegmentationDataModule",
    "SegmentationDataset",
    "SyntheticDataModule",
    "build_dataset",
    "eval_transform",
    "train_transform",
]
