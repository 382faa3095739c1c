"""Callbacks that make a run folder self-describing."""

import json
import os
import time
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only


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
