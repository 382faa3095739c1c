"""RunFolder: the one owner of a run's folder (created, locked, removed after a failed start)."""

import signal
import types

import pytest

from lit_seg.api.run_folder import RunFolder, version
from lit_seg.errors import ConfigError
from lit_seg.train.fault_tolerance import SaveOnInterrupt


def test_a_folder_it_created_is_removed_after_a_failed_start_with_the_empty_parents(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = RunFolder()
    run.path = tmp_path / "runs" / "exp" / version("abcd1234")
    run._create(fresh=True, ckpt_path=None)
    assert run.created and (run.path / ".lock").exists()
    run.remove_if_unused()
    assert not (tmp_path / "runs").exists()  # runs/exp/ and runs/ were empty: gone too
    run.remove_if_unused()  # twice: nothing left to do


def test_a_folder_that_holds_a_run_is_kept(tmp_path):
    for kept_by in ("checkpoint", "step"):
        run = RunFolder()
        run.path = tmp_path / kept_by
        run._create(fresh=True, ckpt_path=None)
        if kept_by == "checkpoint":
            (run.path / "checkpoints").mkdir()
            (run.path / "checkpoints" / "last.ckpt").write_bytes(b"x")
        else:
            run.trainer = types.SimpleNamespace(global_step=3, callbacks=[])
        run.remove_if_unused()
        assert run.path.is_dir(), kept_by


def test_a_folder_it_did_not_create_is_never_removed(tmp_path):
    existing = tmp_path / "resumed"
    existing.mkdir()
    run = RunFolder()
    run.path = existing
    run._create(fresh=False, ckpt_path=None)
    assert not run.created
    run.remove_if_unused()
    assert existing.is_dir()


def test_two_run_folders_in_one_process_keep_their_own_state(tmp_path):
    first, second = RunFolder(), RunFolder()
    first.path, second.path = tmp_path / "a", tmp_path / "b"
    first._create(fresh=True, ckpt_path=None)
    second._create(fresh=True, ckpt_path=None)
    second.trainer = types.SimpleNamespace(global_step=1, callbacks=[])
    first.remove_if_unused()
    second.remove_if_unused()
    assert not first.path.exists() and second.path.is_dir()


def test_stopped_by_is_the_signal_its_trainers_save_on_interrupt_saw():
    run = RunFolder()
    assert run.stopped_by is None
    callback = SaveOnInterrupt()
    run.trainer = types.SimpleNamespace(global_step=5, callbacks=[callback])
    assert run.stopped_by is None
    callback.stopped_by = signal.SIGINT
    assert run.stopped_by == signal.SIGINT


def test_ckpt_path_last_on_a_fresh_run_is_one_clear_error(tmp_path):
    run = RunFolder()
    run.path = tmp_path / "new"
    with pytest.raises(ConfigError, match="--ckpt_path last looks in this run's own folder"):
        run._create(fresh=True, ckpt_path="last")
    assert not run.path.exists()
