"""Lightning data modules."""

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from lit_seg.data.synthetic import BeaconDataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Normalized(Dataset):
    def __init__(self, dataset: Dataset, normalize: v2.Normalize) -> None:
        self.dataset, self.normalize = dataset, normalize

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, mask = self.dataset[index]
        return self.normalize(image), mask


class SyntheticDataModule(pl.LightningDataModule):
    """The built-in data set (:class:`~lit_seg.data.synthetic.BeaconDataset`): no files needed.

    Train, val and test are disjoint streams of one seed. ``num_classes`` and ``class_names``
    are linked to the model by the CLI.

    Args:
        image_size: (H, W) of every image.
        num_colors: beacon colours, i.e. object classes; ``num_classes = 1 + num_colors``.
        train_size, val_size, test_size: samples per split (train: per epoch, the same every epoch).
        batch_size: images per batch (per process).
        num_workers: data loader workers; generation is cheap, 0 keeps both cores for the model.
        seed: data seed (independent of the training seed).
    """

    def __init__(
        self,
        image_size: tuple[int, int] = (96, 96),
        num_colors: int = 3,
        train_size: int = 2048,
        val_size: int = 256,
        test_size: int = 256,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.num_workers = num_workers
        normalize = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        make = lambda length, stream: _Normalized(  # noqa: E731
            BeaconDataset(length, tuple(image_size), num_colors, seed=seed * 3 + stream), normalize)
        self.splits = {"train": make(train_size, 0), "val": make(val_size, 1), "test": make(test_size, 2)}
        self.class_names = self.splits["train"].dataset.class_names
        self.num_classes = len(self.class_names)

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(self.splits[split], batch_size=self.batch_size, shuffle=shuffle, drop_last=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
