"""Nothing lost when a run is stopped, crashes or goes wrong.

All of it is switched on in ``experiments/_base_/runtime.yaml``, the runtime every recipe includes:

- :class:`AtomicCheckpointIO` (``trainer.plugins``): a checkpoint is written to a temporary file
  next to it, fsynced and renamed over the old one, so ``kill -9`` or a full disk never leaves a
  truncated ``last.ckpt`` and never costs the previous one.
- :class:`SaveOnInterrupt`: Ctrl-C or SIGTERM (what a cluster sends before it kills) finishes the
  current batch, writes ``last.ckpt`` and exits; ``lit-seg fit --resume <run folder>`` goes on.
- :class:`LastCheckpoint`: ``last.ckpt`` is always the latest state (after every validation, and
  every N steps if asked), which Lightning 2.6's ModelCheckpoint does not guarantee.
- :class:`ResumeState`: the torch, numpy and Python random states and the train loader's position
  go into every checkpoint and come back on resume, so a resumed run sees the same batches and
  draws the same dropout masks as an uninterrupted one.
- :class:`StopOnNonFiniteLoss`: a NaN or infinite loss stops the run before the step is applied,
  naming the step and the last good checkpoint.
- :class:`ResumableCSVLogger` (``trainer.logger``): a resumed run appends to its ``metrics.csv``.

The data modules' train loaders (:mod:`lit_seg.data.loader`) save their position in the epoch, so
a run resumed mid-epoch sees the same batches in the same order.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_seg.errors import ConfigError, RunError

RESUME_HINT = "lit-seg fit --resume {run}"
# A scheduler's warning before a time limit or preemption: submitit asks SLURM for SIGUSR2
# (Lightning's own SLURM requeue listens on SIGUSR1, which submitit never asks for).
SCHEDULER_SIGNALS = tuple(s for s in (getattr(signal, "SIGUSR2", None),) if s is not None)


class CheckpointWriteError(RunError):
    """A checkpoint could not be written (disk full, no permission); the previous one is intact."""


class NonFiniteLossError(RunError):
    """The training loss became NaN or infinite; the step was not applied."""


def run_folder(trainer: pl.Trainer) -> str:
    """The run folder: the first logger's folder, as Lightning uses it for checkpoints (read from
    the logger, not ``trainer.log_dir``, which is a collective call under DDP)."""
    log_dir = getattr(trainer.loggers[0], "log_dir", None) if trainer.loggers else None
    return log_dir or trainer.default_root_dir


def resume_checkpoint_path(trainer: pl.Trainer) -> str:
    """Where the checkpoint to resume from goes: ``last.ckpt`` beside the run's checkpoints."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath:
        return os.path.join(callback.dirpath, callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION)
    return os.path.join(run_folder(trainer), "checkpoints", "last.ckpt")


def last_good_checkpoint(trainer: pl.Trainer) -> str | None:
    """The newest checkpoint written so far by the run's checkpoint callbacks, if any."""
    paths = [p for cb in getattr(trainer, "checkpoint_callbacks", []) if isinstance(cb, ModelCheckpoint)
             for p in (cb.last_model_path, cb.best_model_path) if p and os.path.isfile(p)]
    return max(paths, key=os.path.getmtime) if paths else None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file in its own folder, fsyncs it and renames it into place.

    Why not Lightning's writer: it stages the file in the system temp folder and moves it; when
    that is another file system (node-local ``/tmp``, checkpoints on NFS or Lustre) the move is a
    copy onto the destination, so a ``kill -9`` or a full disk during the copy leaves a truncated
    ``last.ckpt`` with the previous one already overwritten. ``os.replace`` within one folder is
    atomic: a reader sees the old file or the new one, never a part. A failed write removes its
    temporary file and raises :class:`CheckpointWriteError`; the previous checkpoint is untouched.
    Remote paths (``s3://`` ...) go to Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.fchmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, "wb") as file:
                self._write(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
            tmp = None
            _fsync_dir(path.parent)
            for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer killed with -9
                stale.unlink(missing_ok=True)
        except OSError as err:
            run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
            raise CheckpointWriteError(
                f"could not write checkpoint {path}: {err.strerror or err}; the previous checkpoint there is "
                f"intact. Free disk space (or fix the folder's permissions), then resume with: "
                f"{RESUME_HINT.format(run=run)}") from err
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def _write(self, checkpoint: dict[str, Any], file: Any) -> None:
        torch.save(checkpoint, file)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable (a power cut right after could otherwise lose it).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class SaveOnInterrupt(pl.Callback):
    """Ctrl-C or SIGTERM during ``fit``: finish the current batch, write ``last.ckpt``, stop.

    A scheduler's warning (:data:`SCHEDULER_SIGNALS`) too, where a handler for it is installed when
    training starts (submitit's, in a SLURM job, before a time limit or preemption): that handler is
    restored when the fit ends, for the caller to pass the signal on to once the checkpoint is
    written (:func:`lit_seg.study.ablate.execute`); it stays the reason the run stopped if SIGTERM
    follows. A warning that comes during validation is passed on at once instead (a validation may
    outlast the warning's lead time): the job is requeued from the last checkpoint.

    Lightning handles SIGTERM itself: its handler (installed when ``fit`` starts) raises the flag
    behind ``trainer.received_sigterm``, and the training loop stops with ``SIGTERMException`` once
    the batch's bookkeeping and logging are done, but it writes nothing; Ctrl-C is an immediate
    ``KeyboardInterrupt``, possibly in the middle of an optimiser step. Here both signals are only
    noted, and at the end of the next training batch handed to Lightning's own SIGTERM handler, so
    the run stops where Lightning stops it and the checkpoint written then holds a consistent state:
    model, optimiser, schedule, loop position, the loader's position in the epoch, the RNG states.
    Handing it over at a training batch's end (not when the signal arrives) keeps a signal during
    validation from stopping the run halfway through it (a checkpoint taken there would resume with
    half of its metrics). Under DDP the ranks agree at every batch end on whether any of them got a
    signal (one small all-reduce) and hand it over together. A second Ctrl-C stops at once, without
    a checkpoint (the last one written is kept). The CLI exits with status 130 (Ctrl-C) or 143
    (SIGTERM) after printing the command that resumes the run.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self.stopped_by: int | None = None  # the signal that stopped the fit; the CLI exits with 128 + it
        self._trainer: pl.Trainer | None = None
        self._previous: dict[int, Any] = {}
        self._handed_over = False
        self._say = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self.signal = self.stopped_by = None
        self._handed_over = False
        self._say = trainer.is_global_zero
        self._trainer = trainer
        signals = [signal.SIGINT, signal.SIGTERM, *(s for s in SCHEDULER_SIGNALS if callable(signal.getsignal(s)))]
        self._previous = {s: signal.getsignal(s) for s in signals}
        for signum in self._previous:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signal == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        if signum in SCHEDULER_SIGNALS and self._trainer is not None and self._trainer.validating:
            self.stopped_by = signum
            self._previous[signum](signum, frame)  # the scheduler's handler now: requeue from the last checkpoint
            return
        if self.signal in SCHEDULER_SIGNALS:
            return  # stopping for the scheduler already; that stays the reason
        if self.signal is None and self._say:
            again = " (Ctrl-C again stops at once, without one)" if signum == signal.SIGINT else ""
            print(f"\nlit-seg: {signal.Signals(signum).name} received: stopping after this batch and saving a "
                  f"checkpoint to resume from{again}", file=sys.stderr, flush=True)
        self.signal = signum

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        stop = self.signal is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop and not self._handed_over:
            self._handed_over = True
            lightning_handler = self._previous.get(signal.SIGTERM)
            if callable(lightning_handler):
                lightning_handler(signal.SIGTERM, None)
            else:  # no Lightning handler (a platform without SIGTERM handling): stop at this batch's end
                raise SIGTERMException

    def _restore_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self._previous.items():
                if handler is not None:
                    signal.signal(signum, handler)
        self._previous = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        run = run_folder(trainer)
        if isinstance(exception, SIGTERMException):
            self.stopped_by = self.signal or signal.SIGTERM
            path = resume_checkpoint_path(trainer)
            trainer.save_checkpoint(path)
            name = signal.Signals(self.signal or signal.SIGTERM).name
            if trainer.is_global_zero:
                print(f"lit-seg: stopped by {name} after step {trainer.global_step} (epoch {trainer.current_epoch}); "
                      f"saved {path}; resume with: {RESUME_HINT.format(run=run)}", file=sys.stderr, flush=True)
        elif isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero:
            last = last_good_checkpoint(trainer)
            kept = f"the last checkpoint is {last}" if last else "no checkpoint was written yet"
            print(f"lit-seg: stopped at once by Ctrl-C at step {trainer.global_step}; {kept}"
                  + (f"; resume with: {RESUME_HINT.format(run=run)}" if last else ""), file=sys.stderr, flush=True)


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``, the run's latest state: after every validation (``every_n_train_steps`` 0) or
    every ``every_n_train_steps`` optimiser steps.

    Lightning's own ``save_last=True`` writes ``last.ckpt`` only along with another checkpoint: with
    ``monitor="val/mIoU"`` only when the score improves, so after an epoch that did not improve
    ``last.ckpt`` is an older state, and a run resumed from it would silently repeat epochs. This is
    a stock :class:`ModelCheckpoint` that monitors nothing and keeps one file named ``last.ckpt``,
    overwritten in place. Lightning does not let one ModelCheckpoint save both per validation and
    per N steps, so the runtime lists two: one per validation, and one every 1000 steps (with
    validations hours apart, as in the Cityscapes recipe, it bounds what a ``kill -9`` or a node
    failure costs). Step-based, so all DDP ranks agree on when to write.
    """

    def __init__(self, every_n_train_steps: int = 0, dirpath: str | None = None) -> None:
        if every_n_train_steps < 0:
            raise ConfigError(f"LastCheckpoint: every_n_train_steps must be >= 0 (0: after every validation), "
                              f"got {every_n_train_steps}")
        super().__init__(dirpath=dirpath, filename=self.CHECKPOINT_NAME_LAST, monitor=None, save_top_k=1,
                         enable_version_counter=False, every_n_train_steps=every_n_train_steps or None)


class ResumeState(pl.Callback):
    """What Lightning does not restore on resume: the global random states and the train loader's
    position in the epoch.

    RNG (torch CPU and CUDA, numpy, Python): without them a resumed run draws other dropout masks
    than the run it continues. The data loaders here never draw from the global RNG
    (:mod:`lit_seg.data.loader`), so the state saved after step N is the one step N + 1 starts
    from. Under DDP all ranks hold the same state (same seed, same draws): rank zero's is restored
    on all. Kept as tensors and plain lists, which ``torch.load(weights_only=True)`` accepts.

    Loader position: Lightning saves a stateful train loader's ``state_dict`` with the fit loop,
    but Lightning 2.6 never gives it back when ``configure_optimizers`` reads
    ``trainer.estimated_stepping_batches`` (ours does, for the poly schedule): that sets up the
    train loader before the checkpoint is restored, and the later set-up, which would load the
    saved position, is skipped. So the position is also saved here and handed to the loader when
    training starts, before its first batch is drawn.
    """

    def __init__(self) -> None:
        self._loader_state: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                      float(cached)],
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        loader = self._train_loader
        if loader is not None:
            state["train_loader"] = loader.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        kind, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state_dict and torch.cuda.is_available():
            states = state_dict["cuda"]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)
        self._loader_state = state_dict.get("train_loader")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    @property
    def _train_loader(self) -> Any:
        trainer = getattr(self, "_trainer", None)
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return None
        loader = trainer.train_dataloader
        return loader if callable(getattr(loader, "state_dict", None)) else None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loader, state, self._loader_state = self._train_loader, self._loader_state, None
        if state is not None and loader is not None and callable(getattr(loader, "load_state_dict", None)):
            loader.load_state_dict(state)


class StopOnNonFiniteLoss(pl.Callback):
    """Stops the run when the training loss is NaN or infinite, before its backward pass.

    The weights and optimiser are then still those of the last finite step, nothing is saved over
    ``last.ckpt``, and the error names the step and the last good checkpoint. Without this a
    diverged run trains on NaN weights to the end and saves them. Under DDP a non-finite loss on
    any rank stops all of them.
    """

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._batch = batch  # looked at only when the loss is bad, to name the cause

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        value = loss.detach()
        bad = not bool(torch.isfinite(value).all())
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        shown = value.item() if value.numel() == 1 else float("nan")
        last = last_good_checkpoint(trainer)
        kept = (f"last good checkpoint: {last}" if last
                else "no checkpoint was written before it")
        cause = _batch_cause(getattr(self, "_batch", None), getattr(pl_module, "ignore_index", 255))
        self._batch = None
        advice = (cause or "Lower the learning rate, or check the data (labels outside the classes?) and the "
                           "loss weights")
        raise NonFiniteLossError(
            f"non-finite loss ({'nan' if math.isnan(shown) else shown}) at step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}, batch {trainer.fit_loop.epoch_loop.batch_idx}); stopped before "
            f"applying it, nothing saved over the checkpoints; {kept}. {advice}")


def _batch_cause(batch: Any, ignore_index: int) -> str | None:
    """What in the batch itself makes a loss non-finite, when it is not the weights (None: nothing found)."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        return None
    images, masks = batch[0], batch[1]
    if isinstance(images, torch.Tensor) and images.is_floating_point() and not bool(torch.isfinite(images).all()):
        return ("The batch's images hold NaN or infinite values: the data are at fault, not the learning rate; "
                "check the files with lit-seg check-data")
    if isinstance(masks, torch.Tensor) and masks.numel() and not bool((masks != ignore_index).any()):
        return (f"The batch has no labelled pixel (every mask value is the ignore index {ignore_index}), and the loss "
                f"averages over zero pixels: the cause is the data, not the learning rate; use a loss that gives 0 "
                f"for such a batch (lit_seg.train.losses.CrossEntropy does) or find those images with "
                f"lit-seg check-data")
    return None


class ResilientWandbLogger(LightningWandbLogger):
    """Lightning's :class:`~lightning.pytorch.loggers.WandbLogger`, whose failure never stops a run.

    W&B logs through a service process of its own. A scheduler that stops a job signals every
    process of it (``scancel``, preemption: SIGTERM; submitit's time-limit warning: SIGUSR2), the
    service included, which ends at once; the next value logged would then raise
    ``ConnectionResetError`` in the training loop and fail the run before it could save its
    checkpoint. Here the first such error turns W&B logging off for the rest of the run, in one
    warning line, and the run goes on (``metrics.csv`` and ``summary.json`` have every value).
    """

    _dead = False

    def _guarded(self, call, *args: Any, **kwargs: Any) -> Any:
        if self._dead:
            return None
        try:
            return call(*args, **kwargs)
        except ConnectionError as err:
            self._dead = True
            rank_zero_warn(f"W&B stopped answering ({type(err).__name__}: its service process ended, e.g. on a "
                           f"scheduler's signal): no more W&B logging in this run; metrics.csv has every value")
            return None

    def log_hyperparams(self, params: Any) -> None:
        self._guarded(super().log_hyperparams, params)

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        self._guarded(super().log_metrics, metrics, step)

    def log_table(self, *args: Any, **kwargs: Any) -> None:
        self._guarded(super().log_table, *args, **kwargs)

    def log_image(self, *args: Any, **kwargs: Any) -> None:
        self._guarded(super().log_image, *args, **kwargs)

    def update_summary(self, values: dict) -> None:
        """The W&B run summary updated with ``values`` (guarded as the logging is)."""
        self._guarded(lambda: self.experiment.summary.update(values))

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        self._guarded(super().after_save_checkpoint, checkpoint_callback)

    def finalize(self, status: str) -> None:
        self._guarded(super().finalize, status)


class ResumableCSVLogger(Logger):
    """Metrics into ``<save_dir>/<name>/<version>/metrics.csv`` (and ``hparams.yaml``), as
    Lightning's :class:`~lightning.pytorch.loggers.CSVLogger` writes them, except that a resumed run
    continues the file instead of deleting it.

    Lightning's deletes an existing ``metrics.csv`` when it starts; a resumed run (``lit-seg fit
    --resume``) writes into the same folder and must keep what the interrupted part logged. Rows
    from steps at or after the first step logged now are dropped: they were written after the
    checkpoint the run resumed from (e.g. before a ``kill -9``) and are logged again. The file is
    rewritten whole at every flush (through a temporary file and a rename), so a reader never sees
    half a row. Same arguments as Lightning's.
    """

    def __init__(self, save_dir: str, name: str | None = "lightning_logs", version: int | str | None = None,
                 prefix: str = "", flush_logs_every_n_steps: int = 100) -> None:
        super().__init__()
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version
        self._prefix = prefix
        self._flush_every = flush_logs_every_n_steps
        self._rows: list[dict[str, Any]] | None = None  # None until the file is first read
        self._pending: list[dict[str, Any]] = []
        self._hparams: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int | str:
        if self._version is None:
            root = Path(self.root_dir)
            taken = [int(p.name.split("_", 1)[1]) for p in root.glob("version_*") if p.name.split("_", 1)[1].isdigit()]
            self._version = max(taken, default=-1) + 1
        return self._version

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def root_dir(self) -> str:
        return os.path.join(self._save_dir, self._name)

    @property
    def log_dir(self) -> str:
        version = self.version if isinstance(self.version, str) else f"version_{self.version}"
        return os.path.join(self.root_dir, version)

    @property
    def metrics_file_path(self) -> str:
        return os.path.join(self.log_dir, "metrics.csv")

    @rank_zero_only
    def log_hyperparams(self, params: Any = None, *args: Any, **kwargs: Any) -> None:
        self._hparams.update(vars(params) if isinstance(params, argparse.Namespace) else dict(params or {}))
        os.makedirs(self.log_dir, exist_ok=True)
        save_hparams_to_yaml(os.path.join(self.log_dir, "hparams.yaml"), self._hparams)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        row = {(f"{self._prefix}-{k}" if self._prefix else k): (v.item() if isinstance(v, torch.Tensor) else v)
               for k, v in metrics.items()}
        row["step"] = len(self._pending) if step is None else step
        self._pending.append(row)
        if step is not None and (step + 1) % self._flush_every == 0:
            self.save()

    @rank_zero_only
    def save(self) -> None:
        if not self._pending:
            return
        if self._rows is None:  # the rows an interrupted part of this run wrote before the resumed checkpoint
            first = min(int(row["step"]) for row in self._pending)
            self._rows = [row for row in _read_rows(self.metrics_file_path) if _row_step(row) < first]
        self._rows += self._pending
        self._pending = []
        keys = list(dict.fromkeys(key for row in self._rows for key in row))
        os.makedirs(self.log_dir, exist_ok=True)
        tmp = self.metrics_file_path + ".tmp"
        with open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self._rows)
        os.replace(tmp, self.metrics_file_path)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()


def _read_rows(path: str) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as file:
            return list(csv.DictReader(file))
    except FileNotFoundError:
        return []


def _row_step(row: dict[str, Any]) -> float:
    try:
        return float(row.get("step") or "-inf")
    except ValueError:
        return float("-inf")


__all__ = [
    "AtomicCheckpointIO",
    "CheckpointWriteError",
    "LastCheckpoint",
    "NonFiniteLossError",
    "ResumableCSVLogger",
    "ResumeState",
    "SaveOnInterrupt",
    "StopOnNonFiniteLoss",
    "last_good_checkpoint",
    "resume_checkpoint_path",
]
