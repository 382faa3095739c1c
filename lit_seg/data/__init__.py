"""Data sets and data modules."""

from lit_seg.data.datamodule import SyntheticDataModule
from lit_seg.data.synthetic import BeaconDataset

__all__ = ["BeaconDataset", "SyntheticDataModule"]
