"""``lit-seg predict``: one mask file per image, written by a Lightning ``BasePredictionWriter``.

Predictions use the module's evaluation recipe (``--model.eval_mode``, ``eval_scales``,
``eval_flip``), as ``val/mIoU`` does. Output names mirror the input files' paths below their
common folder, with ``.png``: ``<output_dir>/<same subfolders>/<stem>.png``.

Formats:

* ``index``: palette PNGs whose pixel values are the class indices (train ids) and whose
  palette is the data set's colours (any viewer shows colours, ``np.array(Image.open(f))``
  gives the classes);
* ``cityscapes``: the official result format of the Cityscapes benchmark: 8-bit grey PNGs of
  **label ids** (not train ids), named ``<city>_<seq>_<frame>_leftImg8bit.png`` under
  ``<city>/``, which the test server and ``cityscapesscripts``' pixel-level evaluator read
  (``CITYSCAPES_RESULTS=<output_dir>``).
"""

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch import Tensor

from lit_seg.data.datasets.base import bit_palette
from lit_seg.errors import ConfigError
from lit_seg.inference.visualize import denormalize, prediction_overlay
from lit_seg.train.fault_tolerance import run_folder


def cityscapes_label_ids() -> np.ndarray:
    """(256,) uint8: train id -> Cityscapes label id (the official table's ``trainId2label``);
    255 and unused entries -> 0 (``unlabeled``), which the evaluator ignores."""
    from torchvision.datasets import Cityscapes

    table = np.zeros(256, dtype=np.uint8)
    for c in Cityscapes.classes:
        if 0 <= c.train_id < 255 and c.id >= 0:
            table[c.train_id] = c.id
    return table


def palette_bytes(palette: Sequence[Sequence[int]] | None, num_classes: int) -> list[int]:
    colours = [tuple(c) for c in (palette or bit_palette(max(num_classes, 1)))]
    flat = [int(v) for rgb in colours[:256] for v in rgb]
    flat += [0, 0, 0] * (256 - len(flat) // 3)
    flat[255 * 3:] = [255, 255, 255]  # 255: ignore / unlabelled
    return flat


class SegmentationWriter(BasePredictionWriter):
    """Writes each predicted mask as it is made (``write_interval="batch"``: nothing piles up).

    Args:
        output_dir: where the files go; default ``<run folder>/predictions`` (the run the
            ``predict`` command created), or ``./predictions`` without a run folder.
        format: ``index`` (palette PNG of class indices) or ``cityscapes`` (label ids, the
            benchmark's file names); see :mod:`lit_seg.inference.predict`.
        overlays: also write ``<output_dir>/overlays/<name>.png``: the image beside the prediction
            drawn over it, with a legend of the classes present
            (:func:`lit_seg.inference.visualize.prediction_overlay`).
    """

    def __init__(self, output_dir: str | None = None, format: Literal["index", "cityscapes"] = "index",
                 overlays: bool = False) -> None:
        super().__init__(write_interval="batch")
        if format not in ("index", "cityscapes"):
            raise ConfigError(f"writer.format must be 'index' or 'cityscapes', got {format!r}")
        self.output_dir = output_dir
        self.format = format
        self.overlays = overlays
        self.written = 0
        self._folder: Path | None = None
        self._names: list[str] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        run = run_folder(trainer)
        self._folder = Path(self.output_dir) if self.output_dir else Path(run or ".") / "predictions"
        self.written = 0

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.format == "cityscapes" and getattr(pl_module, "num_classes", 19) != 19:
            raise ConfigError(f"writer.format cityscapes needs a 19-class Cityscapes model; this one has "
                              f"{pl_module.num_classes} classes: use --writer.format index")
        self._names = None

    def _name(self, trainer: pl.Trainer, index: int) -> str:
        """The output's relative path (``.png``) for item ``index`` of the predict set."""
        if self._names is None:
            loader = trainer.predict_dataloaders
            dataset = getattr(loader[0] if isinstance(loader, (list, tuple)) else loader, "dataset", None)
            files = getattr(dataset, "files", None)
            if files is None and getattr(dataset, "samples", None) is not None:
                files = [image for image, _ in dataset.samples]
            if files:
                paths = [Path(f) for f in files]
                root = Path(os.path.commonpath([p.parent for p in paths]))
                self._names = [str(p.relative_to(root).with_suffix(".png")) for p in paths]
            else:
                self._names = []
        return self._names[index] if index < len(self._names) else f"{index:06d}.png"

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Tensor,
                           batch_indices: Sequence[int] | None, batch, batch_idx: int, dataloader_idx: int) -> None:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        if batch_indices is None or len(batch_indices) != len(prediction):
            batch_indices = range(batch_idx * len(prediction), (batch_idx + 1) * len(prediction))
        datamodule = trainer.datamodule
        palette = getattr(datamodule, "palette", None)
        class_names = list(getattr(pl_module, "class_names", None) or [])
        to_label_ids = cityscapes_label_ids() if self.format == "cityscapes" else None
        for image, mask, index in zip(images, prediction.to(torch.uint8).cpu().numpy(), batch_indices):
            name = self._name(trainer, int(index))
            path = self._folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if to_label_ids is not None:
                Image.fromarray(to_label_ids[mask], "L").save(path)
            else:
                picture = Image.fromarray(mask, "P")
                picture.putpalette(palette_bytes(palette, len(class_names)))
                picture.save(path)
            if self.overlays:
                drawn = prediction_overlay(denormalize(image.cpu()), None, mask, class_names, palette=palette,
                                           ignore_index=getattr(pl_module, "ignore_index", 255))
                (self._folder / "overlays" / name).parent.mkdir(parents=True, exist_ok=True)
                drawn.save(self._folder / "overlays" / name)
            self.written += 1

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        what = "label-id PNGs (Cityscapes result format)" if self.format == "cityscapes" else "masks"
        rank_zero_info(f"lit-seg: wrote {self.written} {what} to {self._folder}")
