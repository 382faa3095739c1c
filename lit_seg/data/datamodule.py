"""Lightning data modules."""

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from lit_seg.data.datasets import DatasetName, SegmentationDataset, build_dataset
from lit_seg.data.datasets.images import ImageFiles
from lit_seg.data.loader import ResumableLoader, mix_seed, training_seed
from lit_seg.data.synthetic import ContextCueDataset, Task
from lit_seg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform
from lit_seg.errors import ConfigError


def _check_loader_args(batch_size: int, num_workers: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size} (data.init_args.batch_size)")
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {num_workers} (data.init_args.num_workers)")


def _eval_loader(dataset: Dataset, batch_size: int, num_workers: int) -> DataLoader:
    # Its own generator: iterating it draws nothing from the global RNG (see lit_seg.data.loader).
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, persistent_workers=num_workers > 0,
                      generator=torch.Generator().manual_seed(0))


def _predict_loader(folder: str, num_workers: int) -> DataLoader:
    # One image per batch: the images may all differ in size.
    return _eval_loader(ImageFiles(folder, eval_transform()), 1, num_workers)


class _Normalized(Dataset):
    def __init__(self, dataset: Dataset, normalize: v2.Normalize) -> None:
        self.dataset, self.normalize = dataset, normalize

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, mask = self.dataset[index]
        return self.normalize(image), mask


class SyntheticDataModule(pl.LightningDataModule):
    """The built-in tasks (:class:`~lit_seg.data.synthetic.ContextCueDataset`): no files needed.

    Train, val and test are disjoint streams of one seed. ``num_classes`` and ``class_names``
    are linked to the model by the CLI.

    Args:
        task: ``reach`` (the cue beyond the FCN's receptive field), ``recurrence`` (the cue off
            every object's rows and columns: CCNet needs R=2), ``binding`` (each object's class
            from its own key) or ``global`` (the first built-in task); see
            :mod:`lit_seg.data.synthetic`.
        image_size: (H, W) of every image; None: the task's.
        num_colors: cue colours, i.e. object classes; ``num_classes = 1 + num_colors``.
        cue_size: a stripe's thickness, or a square cue's or key's side, in pixels; None: the task's.
        margin: free pixels between any cue and any object; None: the task's.
        train_size, val_size, test_size: samples per split (train: per epoch, the same every epoch).
        batch_size: images per batch (per process).
        num_workers: data loader workers; one renders batches beside the training process.
        seed: data seed (independent of the training seed).
        predict_dir: ``lit-seg predict`` reads every image in this folder (any size, no masks)
            instead of the test split.
    """

    def __init__(
        self,
        task: Task = "reach",
        image_size: tuple[int, int] | None = None,
        num_colors: int = 3,
        cue_size: int | None = None,
        margin: int | None = None,
        train_size: int = 2048,
        val_size: int = 256,
        test_size: int = 256,
        batch_size: int = 16,
        num_workers: int = 1,
        seed: int = 0,
        predict_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        _check_loader_args(batch_size, num_workers)
        if train_size < batch_size:
            raise ConfigError(f"train_size {train_size} is smaller than batch_size {batch_size}: not one full training "
                              f"batch; raise data.init_args.train_size or lower data.init_args.batch_size")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        normalize = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        make = lambda length, stream: _Normalized(  # noqa: E731
            ContextCueDataset(length, image_size, num_colors, cue_size=cue_size, margin=margin,
                              seed=seed * 3 + stream, task=task),
            normalize)
        self.splits = {"train": make(train_size, 0), "val": make(val_size, 1), "test": make(test_size, 2)}
        train = self.splits["train"].dataset
        self.image_size = (train.height, train.width)  # resolved: the task's when image_size is None
        self.class_names = train.class_names
        self.num_classes = len(self.class_names)

    def _loader(self, split: str) -> DataLoader:
        return _eval_loader(self.splits[split], self.batch_size, self.num_workers)

    def train_dataloader(self) -> DataLoader:
        # Order from (training seed, data seed, epoch); resumes mid-epoch (lit_seg.data.loader).
        return ResumableLoader(self.splits["train"], self.batch_size, seed=mix_seed(training_seed(), self.seed),
                               num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        if self.hparams.predict_dir:
            return _predict_loader(self.hparams.predict_dir, self.num_workers)
        return self._loader("test")


class SegmentationDataModule(pl.LightningDataModule):
    """A file-backed data set (:func:`~lit_seg.data.datasets.build_dataset`) with mmseg's recipe.

    Training: random rescale (ratios of the data set's base size), ``crop_size`` crops that no
    class dominates, flip, photometric distortion. Validation and test: whole images at their
    own size, one per batch (sizes vary). ``num_classes`` and ``class_names`` are set in
    ``__init__`` (the CLI links them to the model), which also reads the validation split's
    file list, so a wrong ``root`` or layout fails before anything is built or trained.

    Args:
        dataset: ``cityscapes``, ``voc``, ``ade20k`` or ``folder``.
        root: the data set's folder (see each data set's docstring for its layout).
        train_split, val_split, test_split: split names (``test`` and ``predict`` use ``test_split``).
        crop_size: (H, W) of the training crops.
        scale_range: (min, max) rescale ratio for training.
        batch_size: training images per batch (per process).
        num_workers: data loader workers (decoding 2048x1024 PNGs is the bottleneck: use several).
        predict_dir: ``lit-seg predict`` reads every image in this folder (any size, no masks)
            instead of ``test_split``.
    """

    def __init__(
        self,
        dataset: DatasetName,
        root: str,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "val",
        crop_size: tuple[int, int] = (512, 1024),
        scale_range: tuple[float, float] = (0.5, 2.0),
        batch_size: int = 2,
        num_workers: int = 4,
        predict_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        _check_loader_args(batch_size, num_workers)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.splits: dict[str, SegmentationDataset] = {"val": build_dataset(dataset, root, val_split, eval_transform())}
        val = self.splits["val"]
        self.class_names = list(val.class_names)
        self.num_classes = val.num_classes
        self.palette = list(val.palette)
        self.ignore_index = val.ignore_index
        self._train_transform = train_transform(tuple(crop_size), tuple(scale_range), ignore_index=val.ignore_index,
                                                base_size=val.base_size)

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if stage == "fit" and "train" not in self.splits:
            train = build_dataset(hp.dataset, hp.root, hp.train_split, self._train_transform)
            # The train loader drops an incomplete last batch: fewer images than batch_size is 0 steps.
            if len(train) < self.batch_size:
                raise ConfigError(f"the {hp.train_split} split of the {hp.dataset} data set at {hp.root} has "
                                  f"{len(train)} image{'s' * (len(train) != 1)}, fewer than batch_size "
                                  f"{self.batch_size}: not one full training batch; add images or lower "
                                  f"data.init_args.batch_size")
            self.splits["train"] = train
        if (stage == "test" or stage == "predict" and not hp.predict_dir) and "test" not in self.splits:
            self.splits["test"] = (self.splits["val"] if hp.test_split == hp.val_split
                                   else build_dataset(hp.dataset, hp.root, hp.test_split, eval_transform()))

    def _loader(self, split: str, batch_size: int) -> DataLoader:
        if split not in self.splits:  # used outside a Trainer
            self.setup({"train": "fit", "test": "test"}[split])
        return _eval_loader(self.splits[split], batch_size, self.num_workers)

    def train_dataloader(self) -> DataLoader:
        # Order from (training seed, epoch), each crop/flip/colour draw from (seed, epoch, index):
        # the same in any worker and after a mid-epoch resume (lit_seg.data.loader).
        if "train" not in self.splits:  # used outside a Trainer
            self.setup("fit")
        return ResumableLoader(self.splits["train"], self.batch_size, seed=training_seed(),
                               num_workers=self.num_workers, sample_seeds=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", 1)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", 1)

    def predict_dataloader(self) -> DataLoader:
        if self.hparams.predict_dir:
            return _predict_loader(self.hparams.predict_dir, self.num_workers)
        return self._loader("test", 1)
