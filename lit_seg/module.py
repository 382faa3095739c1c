"""The LightningModule: training, evaluation and optimisation around an :class:`EncoderDecoder`."""

import math
from collections.abc import Callable, Sequence
from typing import Literal

import lightning.pytorch as pl
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from lit_seg.models.encoder import build_encoder
from lit_seg.models.encoder_decoder import EncoderDecoder, HeadFactory
from lit_seg.models.heads import FCNHead
from lit_seg.optim import SGD, PolyLR

# Called with the optimiser and the total number of optimiser steps of the run.
SchedulerCallable = Callable[[Optimizer, int], LRScheduler]



class SegmentationModule(pl.LightningModule):
    """Semantic segmentation with an smp encoder and a pluggable decode head.

    Args:
        head: the decode head, built as ``head(encoder_channels, num_classes)``; in YAML a
            ``class_path`` under ``lit_seg.models.heads`` with its ``init_args``.
        num_classes: number of classes (linked from the data module).
        class_names: names for per-class metrics (linked from the data module).
        encoder_name: any smp encoder, or a timm one as ``tu-<name>``, that supports dilation.
        encoder_weights: None, a local weights file, or a named smp set (needs the network).
        encoder_depth: encoder stages used (5 = all; 3 stops at ResNet layer2, stride 8).
        output_stride: stride of the deepest features: 8 (the papers' D8) or 16.
        aux_weight: weight of the auxiliary FCN head on the second-to-last stage; 0 disables it.
        aux_channels: width of the auxiliary head.
        optimizer: the optimiser (SGD lr 0.01, momentum 0.9, weight decay 5e-4 by default).
        lr_scheduler: called with the optimiser and the run's total steps; stepped every
            iteration (poly, power 0.9, by default).
        ignore_index: label value excluded from loss and metrics.
    """

    def __init__(
        self,
        head: HeadFactory = FCNHead,
        num_classes: int = 19,
        class_names: Sequence[str] | None = None,
        encoder_name: str = "resnet50",
        encoder_weights: str | None = None,
        encoder_depth: int = 5,
        output_stride: Literal[8, 16] = 8,
        aux_weight: float = 0.4,
        aux_channels: int = 256,
        optimizer: OptimizerCallable = SGD,
        lr_scheduler: SchedulerCallable = PolyLR,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        encoder = build_encoder(encoder_name, encoder_weights, output_stride, encoder_depth)
        self.model = EncoderDecoder(encoder, head, num_classes, aux_weight, aux_channels)
        self.val_iou = MulticlassJaccardIndex(num_classes, average="none", ignore_index=ignore_index,
                                              zero_division=math.nan)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=ignore_index)

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> logits (B, num_classes, H, W)."""
        return self.model(images)["out"]

    def _losses(self, outputs: dict[str, Tensor], masks: Tensor) -> dict[str, Tensor]:
        return {name: F.cross_entropy(outputs[name], masks, ignore_index=self.ignore_index)
                for name in self.model.loss_weights}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, masks = batch
        losses = self._losses(self.model(images), masks)
        weights = self.model.loss_weights
        loss = sum(weights[name] * value for name, value in losses.items())
        self.log("train/loss", loss, prog_bar=True)
        if len(losses) > 1:
            self.log_dict({f"train/loss_{name}": value for name, value in losses.items()})
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        images, masks = batch
        logits = self(images)
        self.log(f"{stage}/loss", F.cross_entropy(logits, masks, ignore_index=self.ignore_index), sync_dist=True)
        preds = logits.argmax(dim=1)
        self.val_iou.update(preds, masks)
        self.val_acc.update(preds, masks)

    def _log_epoch_metrics(self, stage: str) -> None:
        # One confusion matrix over the whole set (summed across processes): the official mIoU.
        # Classes absent from both labels and predictions are NaN and left out of the mean.
        iou = self.val_iou.compute()
        self.log(f"{stage}/mIoU", iou.nanmean(), prog_bar=True)
        self.log(f"{stage}/pixel_acc", self.val_acc.compute())
        self.log_dict({f"{stage}/IoU/{name}": value for name, value in zip(self.class_names, iou)})
        self.val_iou.reset()
        self.val_acc.reset()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def predict_step(self, batch: Tensor | tuple[Tensor, ...], batch_idx: int) -> Tensor:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(images).argmax(dim=1)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        scheduler = self.scheduler_factory(optimizer, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
