"""SaveOnInterrupt's signal rules without a real run: which signals it takes, which one stays the
reason a run stopped, and a scheduler's warning during validation passed on at once (the real runs:
tests/integration/test_fault_tolerance.py and, against SLURM, tests/integration/test_slurm.py)."""

import signal
import types

import pytest

from lit_seg.train.fault_tolerance import SCHEDULER_SIGNALS, SaveOnInterrupt

pytestmark = pytest.mark.skipif(not SCHEDULER_SIGNALS, reason="no SIGUSR2 on this platform")
USR2 = signal.SIGUSR2


@pytest.fixture
def scheduler():
    """A handler on SIGUSR2, as submitit installs in a SLURM job; the signals it was called with."""
    calls = []
    previous = {s: signal.getsignal(s) for s in (USR2, signal.SIGINT, signal.SIGTERM)}
    signal.signal(USR2, lambda signum, frame: calls.append(signum))
    yield calls
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def started(validating: bool = False) -> tuple[SaveOnInterrupt, types.SimpleNamespace]:
    trainer = types.SimpleNamespace(is_global_zero=False, validating=validating)
    callback = SaveOnInterrupt()
    callback.on_train_start(trainer, None)
    return callback, trainer


def test_a_handled_scheduler_warning_is_taken_and_stays_the_reason(scheduler):
    callback, _ = started()
    assert signal.getsignal(USR2) == callback._on_signal  # taken while training
    signal.raise_signal(USR2)
    assert callback.signal == USR2 and scheduler == []  # held until the batch ends, not passed on yet
    signal.raise_signal(signal.SIGTERM)  # the time limit's SIGTERM after the warning
    signal.raise_signal(signal.SIGINT)  # not "a second Ctrl-C": nothing stops at once
    assert callback.signal == USR2
    callback.on_train_end(None, None)
    assert signal.getsignal(USR2) not in (callback._on_signal, signal.SIG_DFL)  # the scheduler's, for ablate


def test_a_warning_during_validation_goes_to_the_scheduler_at_once(scheduler):
    callback, trainer = started()
    trainer.validating = True
    signal.raise_signal(USR2)
    assert scheduler == [USR2] and callback.stopped_by == USR2 and callback.signal is None
    callback.on_train_end(None, None)


def test_an_unhandled_sigusr2_is_left_alone():
    previous = signal.signal(USR2, signal.SIG_DFL)
    try:
        callback, _ = started()
        assert signal.getsignal(USR2) == signal.SIG_DFL
        callback.on_train_end(None, None)
    finally:
        signal.signal(USR2, previous)


def test_the_second_ctrl_c_stops_at_once(scheduler):
    callback, _ = started()
    signal.raise_signal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    callback.on_train_end(None, None)


def test_a_dead_wandb_service_turns_wandb_logging_off_not_the_run(tmp_path, monkeypatch, recwarn):
    """The first ConnectionError from W&B (its service process ended on a scheduler's signal) is one
    warning; nothing is sent to W&B after it, and nothing raises into the training loop."""
    from lightning.pytorch.loggers import WandbLogger

    from lit_seg.train.fault_tolerance import ResilientWandbLogger

    sent = []

    def log_metrics(self, metrics, step=None):
        sent.append(step)
        if step == 2:
            raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(WandbLogger, "log_metrics", log_metrics)
    monkeypatch.setattr(WandbLogger, "finalize", lambda self, status: sent.append(status))
    logger = ResilientWandbLogger(save_dir=str(tmp_path), mode="disabled")
    for step in (1, 2, 3, 4):
        logger.log_metrics({"train/loss": 1.0}, step=step)
    logger.finalize("success")
    assert sent == [1, 2]
    assert [str(w.message) for w in recwarn if "W&B stopped answering" in str(w.message)] != []
