"""Callbacks that make a run folder self-describing."""

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only


class RunSummary(pl.Callback):
    """Writes ``summary.json`` into the run folder after every validation and at the end.

    It holds what an analysis needs without W&B: best and last ``val/mIoU``, last per-class
    IoU, epoch and step, parameter count, wall time, checkpoint paths and the W&B run id. The
    best ``val/mIoU`` and parameter count also go into the W&B run summary.
    """

    def __init__(self, filename: str = "summary.json") -> None:
        self.filename = filename
        self._start = time.monotonic()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.monotonic()

    def _summary(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "test/"))}
        ckpt = trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None
        best = ckpt.best_model_score if ckpt is not None and ckpt.monitor == "val/mIoU" else None
        wandb = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        return {
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "wall_time_s": round(time.monotonic() - self._start, 1),
            "params": sum(p.numel() for p in pl_module.parameters()),
            "head_params": sum(p.numel() for p in pl_module.model.head.parameters()),
            "val/mIoU_best": float(best) if best is not None else metrics.get("val/mIoU"),
            "metrics": metrics,
            "best_checkpoint": ckpt.best_model_path if ckpt is not None else None,
            "last_checkpoint": ckpt.last_model_path if ckpt is not None else None,
            "wandb_run_id": wandb.version if wandb is not None else None,
        }

    @rank_zero_only
    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.log_dir is None:
            return
        summary = self._summary(trainer, pl_module)
        path = Path(trainer.log_dir) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, path)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update(
                    {"val/mIoU_best": summary["val/mIoU_best"], "params": summary["params"],
                     "head_params": summary["head_params"]})

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module)


class AttentionMapLogger(pl.Callback):
    """Draws the head's attention maps for a few validation images after every validation.

    For the first ``num_images`` images of the validation set it draws, per query point, the
    image, the prediction, the target and each of the head's maps (:mod:`lit_seg.visualize`),
    saves the pictures as ``<run folder>/attention/epoch{N}_{i}.png`` (they exist offline) and
    logs them to W&B under ``val/attention``. The query points stay the same all run:
    ``points`` ((row, col) in image pixels, used for every image), or by default the centres of
    the largest objects of each image's mask. Runs on rank zero, after every ``every_n_epochs``-th
    epoch's validation, never in the sanity check. A head without attention maps (FCN, PSP,
    ASPP) makes it a no-op, said once in the log.

    In YAML (``trainer.callbacks``)::

        - class_path: lit_seg.callbacks.AttentionMapLogger
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

    @staticmethod
    def _dataset(trainer: pl.Trainer):
        loaders = trainer.val_dataloaders
        if isinstance(loaders, (list, tuple)):
            loaders = loaders[0] if loaders else None
        dataset = getattr(loaders, "dataset", None)
        return dataset if dataset is not None and hasattr(dataset, "__getitem__") else None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self._disabled or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._draw(trainer, pl_module)

    @rank_zero_only
    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from lit_seg.errors import ConfigError
        from lit_seg.visualize import attention_maps, denormalize, object_centres, overlay, predict

        dataset = self._dataset(trainer)
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
        if trainer.log_dir is not None:
            folder = Path(trainer.log_dir) / "attention"
            folder.mkdir(parents=True, exist_ok=True)
            for i, picture in enumerate(pictures):
                picture.save(folder / f"epoch{trainer.current_epoch}_{i}.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="val/attention", images=pictures, caption=captions, step=trainer.global_step)
