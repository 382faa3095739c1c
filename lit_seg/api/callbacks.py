"""Callbacks that make a run folder self-describing: ``summary.json``, attention maps, prediction
overlays, confusion matrices, the model summary and the console's last line."""

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from lit_seg.errors import ConfigError
from lit_seg.inference.query_dependence import query_dependence
from lit_seg.inference.visualize import (
    EvalMode,
    attention_maps,
    denormalize,
    object_centres,
    overlay,
    predict,
    prediction_overlay,
    same_size,
)
from lit_seg.train.fault_tolerance import LastCheckpoint, ResilientWandbLogger
from lit_seg.train.fault_tolerance import run_folder as _run_folder
from lit_seg.train.flops import count_flops
from lit_seg.train.metrics import confusion_figure


def validation_dataset(trainer: pl.Trainer):
    """The trainer's (first) validation set, if it can be indexed."""
    loaders = trainer.val_dataloaders
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    dataset = getattr(loaders, "dataset", None)
    return dataset if dataset is not None and hasattr(dataset, "__getitem__") else None


# W&B summaries of the evaluation metrics: the best (and the last) value of each run.
BEST_METRICS = {"val/mIoU": "max", "val/mAcc": "max", "val/aAcc": "max", "val/mDice": "max", "val/loss": "min"}


@rank_zero_only
def define_best_metrics(trainer: pl.Trainer) -> None:
    """``define_metric`` on every W&B logger's run: summary ``val/mIoU`` = {"max": ..., "last": ...}, ..."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            if not hasattr(run, "define_metric"):  # wandb disabled: a dummy run
                continue
            for name, best in BEST_METRICS.items():
                run.define_metric(name, summary=f"{best},last")


class RunSummary(pl.Callback):
    """Writes ``summary.json`` into the run folder after every validation and at the end.

    It holds what an analysis needs without W&B: best and last ``val/mIoU``, last per-class
    IoU, accuracy and Dice, mAcc, aAcc, mDice (:mod:`lit_seg.train.metrics`), the last evaluation's
    confusion matrix, epoch and step, parameter count, the head's forward FLOPs, wall time,
    checkpoint paths, the W&B run id and group, and the wall-clock times (seconds since the epoch) of
    this part's first and last training steps (``first_step_at``, ``last_step_at``). Parameter
    counts and head GFLOPs also go into the W&B run summary; the best ``val/mIoU`` there is W&B's
    (``define_metric``: ``val/mIoU.max``).

    ``head_gflops``: FLOPs (:func:`lit_seg.train.flops.count_flops`, a multiply-add is 2) of one
    forward pass of the decode head in eval mode, counted once, after the first training step
    (not before it: the count is not on the way to the first step), on the encoder's features of
    one image of the training crop size (the data module's ``crop_size`` or
    ``image_size``; shape in ``head_flops_input``). None when the size is unknown.

    ``query_dependence``: the mean cosine distance between the attention maps of different query
    positions (:func:`lit_seg.inference.query_dependence.query_dependence`) on the first
    ``query_dependence_images`` validation images, measured once at the end of training (a run
    that evaluates by sliding window gives it the top-left ``eval_crop`` of each image); also in
    the W&B summary. None for a head without attention maps, until training ends, or with
    ``query_dependence_images`` 0.
    """

    def __init__(self, filename: str = "summary.json", count_head_flops: bool = True,
                 query_dependence_images: int = 4) -> None:
        self.filename = filename
        self.count_head_flops = count_head_flops
        self.query_dependence_images = query_dependence_images
        self._query_dependence: float | None = None
        self._start = time.monotonic()
        self._head_flops: int | None = None
        self._head_flops_input: list[int] | None = None
        self._flops_counted = False
        self._best: tuple[float, int] | None = None  # (val/mIoU, epoch) of this part of the run
        self._first_step_at: float | None = None
        self._last_step_at: float | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        define_best_metrics(trainer)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        # Wall-clock (epoch seconds), not monotonic: a launcher compares them with its own clock.
        self._last_step_at = time.time()
        if self._first_step_at is None:
            self._first_step_at = self._last_step_at
        if self.count_head_flops and not self._flops_counted:
            self._flops_counted = True  # once, also when the count fails
            self._count_head_flops(trainer, pl_module)

    def _count_head_flops(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        hparams = getattr(trainer.datamodule, "hparams", None) or {}
        size = getattr(trainer.datamodule, "image_size", None) or next(
            (hparams[k] for k in ("crop_size", "image_size") if hparams.get(k)), None)
        model = getattr(pl_module, "model", None)
        if size is None or model is None:
            rank_zero_info("RunSummary: no training crop size known (data module's crop_size/image_size); "
                           "head_gflops not counted")
            return
        shape = [1, 3, int(size[0]), int(size[1])]
        modes = {module: module.training for module in model.modules()}  # each restored as it was
        try:
            model.eval()
            with torch.no_grad():
                weight = next(model.parameters())
                features = model.encoder(torch.zeros(shape, device=weight.device, dtype=weight.dtype))
            self._head_flops = count_flops(model.head, features)
            self._head_flops_input = shape
        except Exception as err:  # noqa: BLE001 - a count must never stop a run
            rank_zero_warn(f"RunSummary: could not count the head's FLOPs: {err}")
        finally:
            for module, training in modes.items():
                module.training = training

    @rank_zero_only
    def _measure_query_dependence(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dataset = validation_dataset(trainer)
        model = getattr(pl_module, "model", None)
        if self.query_dependence_images < 1 or dataset is None or model is None or len(dataset) == 0:
            return
        crop = getattr(pl_module, "eval_crop", None) if getattr(pl_module, "eval_mode", "whole") == "slide" else None
        try:
            weight = next(model.parameters())
            images = []
            for i in range(min(self.query_dependence_images, len(dataset))):
                image = dataset[i][0].to(device=weight.device, dtype=weight.dtype)
                # The whole image may not fit through the model at once where evaluation slides a window.
                images.append(image[:, :crop[0], :crop[1]] if crop is not None else image)
            self._query_dependence = query_dependence(model, images)
        except Exception as err:  # noqa: BLE001 - a measurement must never stop a run
            rank_zero_warn(f"RunSummary: could not measure the query dependence: {err}")

    def _summary(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "test/"))}
        ckpt = trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None
        best = ckpt.best_model_score if ckpt is not None and ckpt.monitor == "val/mIoU" else None
        wandb = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        return {
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "wall_time_s": round(time.monotonic() - self._start, 1),
            "first_step_at": self._first_step_at,
            "last_step_at": self._last_step_at,
            "params": sum(p.numel() for p in pl_module.parameters()),
            "head_params": sum(p.numel() for p in pl_module.model.head.parameters()),
            "head_gflops": self._head_flops / 1e9 if self._head_flops is not None else None,
            "head_flops_input": self._head_flops_input,
            "query_dependence": self._query_dependence,
            "val/mIoU_best": float(best) if best is not None else metrics.get("val/mIoU"),
            # The epoch of this part's best validation (a resumed run: of the part since the resume).
            "val/mIoU_best_epoch": self._best[1] if self._best is not None else None,
            "metrics": metrics,
            # Rows: label, columns: prediction, pixels of the last evaluation (lit_seg.train.metrics).
            "confusion_matrix": (pl_module.last_confmat.tolist()
                                 if getattr(pl_module, "last_confmat", None) is not None else None),
            "best_checkpoint": ckpt.best_model_path if ckpt is not None else None,
            "last_checkpoint": next((cb.best_model_path for cb in trainer.checkpoint_callbacks
                                     if isinstance(cb, LastCheckpoint) and cb.best_model_path), None),
            "wandb_run_id": wandb.version if wandb is not None else None,
            "group": (getattr(wandb.experiment, "group", None) or None) if wandb is not None else None,
        }

    @rank_zero_only
    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or _run_folder(trainer) is None:
            return
        summary = self._summary(trainer, pl_module)
        path = Path(_run_folder(trainer)) / self.filename
        if not summary["metrics"] and path.is_file():
            # A resumed run that has not validated yet (e.g. `--resume` of a finished run): keep
            # the metrics of the earlier part instead of writing empty ones over them.
            try:
                earlier = json.loads(path.read_text())
            except (OSError, ValueError):
                earlier = {}
            summary["metrics"] = earlier.get("metrics", {})
            for key in ("val/mIoU_best", "val/mIoU_best_epoch", "query_dependence"):
                if summary[key] is None:
                    summary[key] = earlier.get(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, path)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                # The best val/mIoU is W&B's own summary (define_metric, "val/mIoU.max").
                values = {key: summary[key] for key in ("params", "head_params", "head_gflops", "query_dependence")}
                if isinstance(logger, ResilientWandbLogger):
                    logger.update_summary(values)
                else:  # Lightning's own, named in a config of the user's
                    logger.experiment.summary.update(values)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get("val/mIoU")
        if not trainer.sanity_checking and value is not None and (self._best is None or float(value) > self._best[0]):
            self._best = (float(value), trainer.current_epoch)
        self._write(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Here, not in on_fit_end: by then the strategy's teardown has moved the model to the CPU.
        self._measure_query_dependence(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module)


class AttentionMapLogger(pl.Callback):
    """Draws the head's attention maps for a few validation images after every validation.

    For the first ``num_images`` images of the validation set it draws, per query point, the
    image, the prediction, the target and each of the head's maps (:mod:`lit_seg.inference.visualize`),
    saves the pictures as ``<run folder>/attention/epoch{N}_{i}.png`` (they exist offline) and
    logs them to W&B under ``val/attention``. The query points stay the same all run:
    ``points`` ((row, col) in image pixels, used for every image), or by default the centres of
    the largest objects of each image's mask. Runs on rank zero, after every ``every_n_epochs``-th
    epoch's validation, never in the sanity check. A head without attention maps (FCN, PSP,
    ASPP) makes it a no-op, said once in the log.

    In YAML (``trainer.callbacks``)::

        - class_path: lit_seg.api.callbacks.AttentionMapLogger
          init_args: {num_images: 2}
    """

    def __init__(self, num_images: int = 2, points: Sequence[tuple[int, int]] | None = None,
                 every_n_epochs: int = 1, max_points: int = 3) -> None:
        if num_images < 1 or every_n_epochs < 1:
            raise ValueError("AttentionMapLogger: num_images and every_n_epochs must be >= 1")
        self.num_images = num_images
        self.points = [tuple(p) for p in points] if points is not None else None
        self.every_n_epochs = every_n_epochs
        self.max_points = max_points
        self._disabled = False
        self._points: dict[int, list[tuple[int, int]]] = {}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self._disabled or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._draw(trainer, pl_module)

    @rank_zero_only
    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dataset = validation_dataset(trainer)
        if dataset is None:
            rank_zero_info("AttentionMapLogger: no indexable validation set; no attention maps drawn")
            self._disabled = True
            return
        model = pl_module.model
        ignore_index = getattr(pl_module, "ignore_index", 255)
        palette = getattr(trainer.datamodule, "palette", None) if trainer.datamodule is not None else None
        pictures, captions = [], []
        for i in range(min(self.num_images, len(dataset))):
            image, mask = dataset[i][:2]
            if i not in self._points:
                self._points[i] = self.points or object_centres(mask, self.max_points, ignore_index=ignore_index)
            points = self._points[i]
            image = image.to(pl_module.device)
            try:
                maps = attention_maps(model, image, points)
            except ConfigError as err:
                rank_zero_info(f"AttentionMapLogger: {err}; the callback does nothing")
                self._disabled = True
                return
            pictures.append(overlay(denormalize(image), maps, points, prediction=predict(model, image),
                                    target=mask, palette=palette, ignore_index=ignore_index))
            captions.append(f"val image {i}, epoch {trainer.current_epoch}, points (row, col) {points}")
        if _run_folder(trainer) is not None:
            folder = Path(_run_folder(trainer)) / "attention"
            folder.mkdir(parents=True, exist_ok=True)
            for i, picture in enumerate(pictures):
                picture.save(folder / f"epoch{trainer.current_epoch}_{i}.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="val/attention", images=same_size(pictures), caption=captions,
                                 step=trainer.global_step)


class PredictionLogger(pl.Callback):
    """Per-class IoU as a W&B table and prediction overlays, after every validation.

    On rank zero, after every ``every_n_epochs``-th epoch's validation (never the sanity check):

    * ``val/IoU_table``: a W&B table with one row per class, columns ``epoch``, ``step``,
      ``class``, ``IoU``, from this validation's ``val/IoU/<class>`` (a class absent from both
      labels and predictions has no IoU: empty cell);
    * ``val/predictions``: the validation images ``indices`` (default the first ``num_images``;
      the same all run) as W&B images with ``ground_truth`` and ``prediction`` masks whose
      labels are the class names (``ignore_index`` pixels: "ignore"), which W&B draws over the
      image with one toggle per class (images larger than ``max_side`` are subsampled by a
      whole stride, masks alike, to keep the run small);
    * ``<run folder>/predictions/epoch{N}_{i}.png`` (i: the image's index in the validation
      set): image | ground truth | prediction with a legend
      (:func:`lit_seg.inference.visualize.prediction_overlay`), there offline too.

    Predictions use the module's evaluation recipe (``eval_mode``, scales, flip), as
    ``val/mIoU`` does. In YAML (``trainer.callbacks``)::

        - class_path: lit_seg.api.callbacks.PredictionLogger
          init_args: {num_images: 2}
    """

    def __init__(self, num_images: int = 2, indices: Sequence[int] | None = None, every_n_epochs: int = 1,
                 iou_table: bool = True, max_side: int = 1024) -> None:
        if num_images < 0 or every_n_epochs < 1 or max_side < 1:
            raise ValueError("PredictionLogger: num_images must be >= 0, every_n_epochs and max_side >= 1")
        self.max_side = max_side
        self.num_images = num_images
        self.indices = [int(i) for i in indices] if indices is not None else None
        self.every_n_epochs = every_n_epochs
        self.iou_table = iou_table

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._log(trainer, pl_module)

    @rank_zero_only
    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        class_names = list(getattr(pl_module, "class_names", None) or [])
        if self.iou_table and loggers and class_names:
            rows = []
            for name in class_names:
                value = trainer.callback_metrics.get(f"val/IoU/{name}")
                value = float(value) if value is not None else math.nan
                rows.append([trainer.current_epoch, trainer.global_step, name, None if math.isnan(value) else value])
            for logger in loggers:
                logger.log_table(key="val/IoU_table", columns=["epoch", "step", "class", "IoU"], data=rows,
                                 step=trainer.global_step)
        self._predictions(trainer, pl_module, loggers, class_names)

    def _predictions(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loggers: list[WandbLogger],
                     class_names: list[str]) -> None:
        dataset = validation_dataset(trainer)
        indices = self.indices if self.indices is not None else range(self.num_images)
        indices = [i for i in indices if dataset is not None and 0 <= i < len(dataset)]
        if not indices:
            return
        ignore_index = getattr(pl_module, "ignore_index", 255)
        palette = getattr(trainer.datamodule, "palette", None) if trainer.datamodule is not None else None
        # W&B masks are 8-bit: ignored pixels get their own label (255, "ignore").
        labels = {c: name for c, name in enumerate(class_names)}
        use_masks = len(class_names) < 255
        labels[255] = "ignore"
        images, masks, captions, pictures = [], [], [], []
        with EvalMode(pl_module):
            for i in indices:
                image, target = dataset[i][:2]
                scores, _ = pl_module.segment(image[None].to(pl_module.device))
                prediction = scores.argmax(dim=1)[0].cpu()
                rgb = denormalize(image)
                pictures.append(prediction_overlay(rgb, target, prediction, class_names, palette=palette,
                                                   ignore_index=ignore_index))
                stride = -(-max(rgb.shape[:2]) // self.max_side)
                images.append(rgb[::stride, ::stride].copy())
                truth = target.cpu().numpy().astype("int64")
                truth[truth == ignore_index] = 255
                masks.append({"prediction": {"mask_data": prediction.numpy()[::stride, ::stride].astype("uint8"),
                                             "class_labels": labels},
                              "ground_truth": {"mask_data": truth[::stride, ::stride].astype("uint8"),
                                               "class_labels": labels}})
                captions.append(f"val image {i}, epoch {trainer.current_epoch}")
        if _run_folder(trainer) is not None:
            folder = Path(_run_folder(trainer)) / "predictions"
            folder.mkdir(parents=True, exist_ok=True)
            for i, picture in zip(indices, pictures):
                picture.save(folder / f"epoch{trainer.current_epoch}_{i}.png")
        for logger in loggers:
            if use_masks:
                logger.log_image(key="val/predictions", images=images, masks=masks, caption=captions,
                                 step=trainer.global_step)
            else:  # more classes than 8-bit masks can name: the drawn overlays instead
                logger.log_image(key="val/predictions", images=same_size(pictures), caption=captions,
                                 step=trainer.global_step)


class ConfusionMatrixLogger(pl.Callback):
    """The row-normalised confusion matrix of every validation (and test), as a picture.

    ``<run folder>/confusion/<stage>_epoch{N}.png`` (offline too) and W&B ``<stage>/confusion_matrix``:
    rows the label, columns the prediction, each row's share of its label's pixels, class names on
    the axes (:func:`lit_seg.train.metrics.confusion_figure`). Drawn from the module's ``last_confmat``,
    the matrix every metric comes from. Rank zero, never in the sanity check.
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        if every_n_epochs < 1:
            raise ValueError("ConfusionMatrixLogger: every_n_epochs must be >= 1")
        self.every_n_epochs = every_n_epochs

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._draw(trainer, pl_module, "val")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._draw(trainer, pl_module, "test")

    @rank_zero_only
    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        confmat = getattr(pl_module, "last_confmat", None)
        if confmat is None:
            return
        names = list(getattr(pl_module, "class_names", None) or range(confmat.shape[0]))
        picture = confusion_figure(confmat, [str(n) for n in names],
                                   title=f"{stage} confusion matrix, epoch {trainer.current_epoch} (row-normalised)")
        if _run_folder(trainer) is not None:
            folder = Path(_run_folder(trainer)) / "confusion"
            folder.mkdir(parents=True, exist_ok=True)
            picture.save(folder / f"{stage}_epoch{trainer.current_epoch}.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"{stage}/confusion_matrix", images=[picture], step=trainer.global_step)


class ModelSummary(pl.Callback):
    """The model's parameters when fitting starts: per top-level part (encoder, head, auxiliary
    head), trainable and total, and the size in MB; on rank zero, into the log.

    Lightning's ``ModelSummary`` would add a FLOPs column of zeros (it counts only with an
    ``example_input_array``); lit-seg counts the head's FLOPs itself (``summary.json``)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rank_zero_info(model_summary(pl_module))


def model_summary(module: torch.nn.Module) -> str:
    """A table of the parameters of each part of ``module.model`` (or of ``module``'s children)."""
    root = getattr(module, "model", module)
    rows = [(name, type(part).__name__, sum(p.numel() for p in part.parameters()),
             sum(p.numel() for p in part.parameters() if p.requires_grad)) for name, part in root.named_children()]
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    size_mb = sum(p.numel() * p.element_size() for p in module.parameters()) / 1e6
    width = max([len(name) for name, *_ in rows] + [4])
    kinds = max([len(kind) for _, kind, *_ in rows] + [4])
    lines = [f"  {'part':<{width}}  {'type':<{kinds}}  {'params':>12}  {'trainable':>12}"]
    lines += [f"  {name:<{width}}  {kind:<{kinds}}  {n:>12,}  {t:>12,}" for name, kind, n, t in rows]
    lines.append(f"  {'all':<{width}}  {'':<{kinds}}  {total:>12,}  {trainable:>12,}  ({size_mb:.1f} MB)")
    return "\n".join(lines)
