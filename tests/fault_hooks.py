"""Test-only callbacks that make a run go wrong at a chosen step, added on the command line:

    lit-seg fit ... --trainer.callbacks+='{"class_path": "tests.fault_hooks.SignalAtStep", "init_args": {"step": 2}}'

(the subprocess needs the repository root on PYTHONPATH).
"""

import errno
import os
import signal
import time

import lightning.pytorch as pl
import torch

from lit_seg.train.fault_tolerance import AtomicCheckpointIO, SaveOnInterrupt


class SignalAtStep(pl.Callback):
    """Sends ``signum`` to this process when the ``step``-th optimiser step has just been taken, as
    a user's Ctrl-C (SIGINT) or a cluster's SIGTERM would arrive in the middle of an epoch. Listed
    after SaveOnInterrupt, it acts during the next step: the run stops after step ``step + 1``."""

    def __init__(self, step: int, signum: int = int(signal.SIGTERM)) -> None:
        self.step = step
        self.signum = signum

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class PoisonAtStep(pl.Callback):
    """Sets every weight to NaN after the ``step``-th optimiser step: the next loss is NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))


class DiskFullAfter(AtomicCheckpointIO):
    """The checkpoint writer, on a disk that fills up: the first ``writes`` checkpoints are written,
    each later one fails halfway with ENOSPC (the OSError a full disk gives)."""

    def __init__(self, writes: int = 1) -> None:
        super().__init__()
        self.writes = writes

    def _write(self, checkpoint, file) -> None:
        if self.writes > 0:
            self.writes -= 1
            return super()._write(checkpoint, file)
        file.write(b"PK\x03\x04" + b"\0" * 4096)  # the start of a zip, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class SleepAtStep(pl.Callback):
    """Sleeps ``seconds`` once the ``step``-th optimiser step has been taken (0: when training starts),
    so that a test can act while the run is surely in the middle of training."""

    def __init__(self, step: int, seconds: float) -> None:
        self.step = step
        self.seconds = seconds

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.step == 0:
            time.sleep(self.seconds)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if self.step and trainer.global_step == self.step:
            time.sleep(self.seconds)


class SleepUntilSignal(pl.Callback):
    """After the ``step``-th optimiser step, waits (up to ``max_seconds``) until the run's
    SaveOnInterrupt has noted a signal: a test's scheduler signal then always lands in the middle of
    training, however early or late the scheduler sends it."""

    def __init__(self, step: int, max_seconds: float = 300.0) -> None:
        self.step = step
        self.max_seconds = max_seconds

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if trainer.global_step != self.step:
            return
        savers = [cb for cb in trainer.callbacks if isinstance(cb, SaveOnInterrupt)]
        deadline = time.monotonic() + self.max_seconds
        while time.monotonic() < deadline and not any(cb.signal or cb.stopped_by for cb in savers):
            time.sleep(0.2)
