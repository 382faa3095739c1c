"""The LightningModule: training, evaluation and optimisation around an :class:`EncoderDecoder`."""

from collections.abc import Callable, Sequence
from typing import Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics.classification import MulticlassConfusionMatrix

from lit_seg.errors import ConfigError
from lit_seg.models.encoder import build_encoder
from lit_seg.models.encoder_decoder import EncoderDecoder, HeadFactory
from lit_seg.models.eval_modes import segment
from lit_seg.models.gc_backbone import insert_global_context
from lit_seg.models.heads import FCNHead
from lit_seg.train.losses import CrossEntropy, OhemCrossEntropy, masked_cross_entropy
from lit_seg.train.metrics import named_scores
from lit_seg.train.optim import SGD, PolyLR

# Called with the optimiser and the total number of optimiser steps of the run.
SchedulerCallable = Callable[[Optimizer, int], LRScheduler]



# Evaluation-recipe init args: chosen per evaluation run, not part of the trained model.
EVAL_ARGS = ("eval_mode", "eval_crop", "eval_stride", "eval_scales", "eval_flip")


class SegmentationModule(pl.LightningModule):
    """Semantic segmentation with an smp encoder and a pluggable decode head.

    Args:
        head: the decode head, built as ``head(encoder_channels, num_classes)``; in YAML a
            ``class_path`` under ``lit_seg.models.heads`` with its ``init_args``. None: FCNHead.
            (None rather than ``FCNHead`` as the default: jsonargparse would lay FCNHead's
            defaults, e.g. ``dropout: 0.1``, over the head a config names, jsonargparse#460; the
            optimiser and scheduler defaults are None for the same reason.)
        num_classes: number of classes (linked from the data module).
        class_names: names for per-class metrics (linked from the data module).
        encoder_name: any smp encoder, or a timm one as ``tu-<name>``, that supports dilation.
        encoder_weights: None, a local weights file, or a named smp set (needs the network).
        encoder_depth: encoder stages used (5 = all; 3 stops at ResNet layer2, stride 8).
        output_stride: stride of the deepest features: 8 (the papers' D8) or 16.
        encoder_gc_stages: ResNet layers whose residual blocks get a GCNet global context block
            (ratio 1/16), e.g. [2, 3, 4] as GCNet (c3-c5); empty: none.
        aux_weight: weight of the auxiliary FCN head on the second-to-last stage; 0 disables it.
        aux_channels: width of the auxiliary head.
        channels_last: run the model on NHWC (channels-last) tensors: the layout GPU tensor cores
            and the CPU's oneDNN convolutions prefer (a ccnet_r2 training step on this 2-core CPU:
            170 ms instead of 205 ms). Same model and results up to float rounding.
        optimizer: the optimiser; None: SGD, lr 0.01, momentum 0.9, weight decay 5e-4.
        lr_scheduler: called with the optimiser and the run's total steps; stepped every
            iteration; None: poly, power 0.9.
        ignore_index: label value excluded from loss and metrics.
        loss: ``ce`` (cross-entropy) or ``ohem`` (:class:`~lit_seg.train.losses.OhemCrossEntropy`, as
            mmseg's OHEMPixelSampler) for the head's outputs; the auxiliary head always uses
            ``ce`` (mmseg's OHEM configs set the sampler on the decode head only).
        ohem_thresh: OHEM keeps pixels whose probability of the true class is below this...
        ohem_min_kept: ...and at least this many per image (``min_kept * batch`` per batch, as mmseg).
        class_weights: per-class weights of the cross-entropy (both losses, every output); None: equal.
        eval_mode: validation/test inference, ``whole`` image or sliding window (``slide``),
            see :mod:`lit_seg.inference`.
        eval_crop: (H, W) window of ``slide`` mode.
        eval_stride: (H, W) stride of ``slide`` mode (default: 2/3 of the window, mmseg's
            512x1024 windows at stride 341x683 use the same ratio).
        eval_scales: test-time scales (relative to the image); more than ``(1.0,)`` averages the
            softmax probabilities over scales, as mmseg's aug test (e.g. 0.5 ... 1.75).
        eval_flip: also average the horizontally flipped pass of each scale.
    """

    def __init__(
        self,
        head: HeadFactory | None = None,
        num_classes: int = 19,
        class_names: Sequence[str] | None = None,
        encoder_name: str = "resnet50",
        encoder_weights: str | None = None,
        encoder_depth: int = 5,
        output_stride: Literal[8, 16] = 8,
        encoder_gc_stages: Sequence[int] = (),
        aux_weight: float = 0.4,
        aux_channels: int = 256,
        channels_last: bool = False,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: SchedulerCallable | None = None,
        ignore_index: int = 255,
        loss: Literal["ce", "ohem"] = "ce",
        ohem_thresh: float = 0.7,
        ohem_min_kept: int = 100_000,
        class_weights: Sequence[float] | None = None,
        eval_mode: Literal["whole", "slide"] = "whole",
        eval_crop: tuple[int, int] | None = None,
        eval_stride: tuple[int, int] | None = None,
        eval_scales: Sequence[float] = (1.0,),
        eval_flip: bool = False,
    ) -> None:
        super().__init__()
        # The eval_* settings are left out of the checkpoint's hyperparameters: `validate`/`test
        # --ckpt_path` merges those over the command line, which would undo `--model.eval_flip true`.
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", *EVAL_ARGS])
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"{len(class_names)} class names for {num_classes} classes")
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        if class_weights is not None and len(class_weights) != num_classes:
            raise ConfigError(f"{len(class_weights)} class weights for {num_classes} classes: model.class_weights "
                              f"needs one weight per class ({', '.join(self.class_names)})")
        if loss not in ("ce", "ohem"):
            raise ConfigError(f"loss must be 'ce' or 'ohem', got {loss!r}")
        if eval_mode not in ("whole", "slide"):
            raise ConfigError(f"eval_mode must be 'whole' or 'slide', got {eval_mode!r}")
        if eval_mode == "slide" and eval_crop is None:
            raise ConfigError("eval_mode 'slide' needs eval_crop (the window's H, W): --model.eval_crop [H,W]")
        if not eval_scales or min(eval_scales) <= 0:
            raise ConfigError(f"eval_scales must be positive, got {eval_scales}")
        self.eval_mode = eval_mode
        self.eval_crop = tuple(eval_crop) if eval_crop is not None else None
        self.eval_stride = (tuple(eval_stride) if eval_stride is not None
                            else tuple(max(1, 2 * c // 3) for c in eval_crop) if eval_crop is not None else None)
        if self.eval_crop is not None and (min(self.eval_crop) < 1 or min(self.eval_stride) < 1
                                           or any(s > c for s, c in zip(self.eval_stride, self.eval_crop))):
            raise ConfigError(f"eval_stride {self.eval_stride} must be positive and at most eval_crop {self.eval_crop} "
                              f"(a larger stride leaves pixels between windows unseen)")
        self.eval_scales = tuple(float(x) for x in eval_scales)
        self.eval_flip = eval_flip
        self.criterion = CrossEntropy(ignore_index, class_weights)
        self.head_criterion = (OhemCrossEntropy(ohem_thresh, ohem_min_kept, ignore_index, class_weights)
                               if loss == "ohem" else self.criterion)
        self.optimizer_factory = optimizer if optimizer is not None else SGD
        self.scheduler_factory = lr_scheduler if lr_scheduler is not None else PolyLR
        encoder = build_encoder(encoder_name, encoder_weights, output_stride, encoder_depth)
        if encoder_gc_stages:
            encoder = insert_global_context(encoder, encoder_gc_stages)
        self.model = EncoderDecoder(encoder, head if head is not None else FCNHead, num_classes, aux_weight,
                                    aux_channels)
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        # One confusion matrix over the whole set (summed across processes): every metric comes
        # from it (lit_seg.train.metrics), so mIoU is the official one, not a mean of per-image values.
        self.val_confmat = MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index)
        # The last evaluation's matrix (C, C) on the CPU, for ConfusionMatrixLogger and summary.json.
        self.last_confmat: Tensor | None = None

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.channels_last and isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
            return (batch[0].contiguous(memory_format=torch.channels_last), *batch[1:])
        return batch

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> logits (B, num_classes, H, W)."""
        return self.model(images)["out"]

    def losses(self, outputs: dict[str, Tensor], masks: Tensor) -> dict[str, Tensor]:
        return {name: (self.criterion if name == "aux" else self.head_criterion)(outputs[name], masks)
                for name in self.model.loss_weights}

    def segment(self, images: Tensor) -> tuple[Tensor, bool]:
        """Evaluation-time scores with the configured ``eval_*`` recipe: ``(scores, are_probs)``,
        logits for single-scale whole/slide, averaged softmax probabilities otherwise."""
        return segment(self, images, self.num_classes, self.eval_mode, self.eval_crop, self.eval_stride,
                       self.eval_scales, self.eval_flip)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, masks = batch
        losses = self.losses(self.model(images), masks)
        weights = self.model.loss_weights
        loss = sum(weights[name] * value for name, value in losses.items())
        self.log("train/loss", loss, prog_bar=True)
        if len(losses) > 1:
            self.log_dict({f"train/loss_{name}": value for name, value in losses.items()})
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        images, masks = batch
        scores, are_probs = self.segment(images)
        # The unweighted CE of the prediction (NLL of the averaged probabilities for multi-scale).
        loss = (F.nll_loss(scores.clamp_min(1e-12).log(), masks, ignore_index=self.ignore_index) if are_probs
                else masked_cross_entropy(scores, masks, ignore_index=self.ignore_index))
        self.log(f"{stage}/loss", loss, sync_dist=True)
        self.val_confmat.update(scores.argmax(dim=1), masks)

    def _log_epoch_metrics(self, stage: str) -> None:
        # mIoU, mAcc, aAcc, mDice and per-class IoU/Acc/Dice (lit_seg.train.metrics); classes absent from
        # both labels and predictions are NaN and left out of the means.
        confmat = self.val_confmat.compute()
        self.last_confmat = confmat.detach().cpu()
        values = named_scores(confmat, self.class_names, prefix=f"{stage}/")
        self.log(f"{stage}/mIoU", values.pop(f"{stage}/mIoU"), prog_bar=True)
        self.log_dict(values)
        self.val_confmat.reset()

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
        return self.segment(images)[0].argmax(dim=1)

    def configure_optimizers(self):
        try:
            optimizer = self.optimizer_factory(self.parameters())
        except ValueError as err:  # torch's optimisers check their arguments (e.g. "Invalid learning rate: -0.1")
            raise ConfigError(f"optimizer: {err} (model.optimizer.init_args)") from err
        scheduler = self.scheduler_factory(optimizer, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
