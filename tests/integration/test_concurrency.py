"""One writer per run folder (lit_seg/api/run_lock.py), with real processes: two `--resume` of one run
at once, a lock left by a killed process, and the ablation runner killed with SIGKILL."""

import csv
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from lit_seg.api import run_lock
from lit_seg.errors import RunError
from lit_seg.study.ablate import Cell
from tests.conftest import EXPERIMENTS, ROOT, TINY_FIT, lit_seg, subprocess_env
from tests.fault_runs import hook

HOLDER = """
import sys, time
from lit_seg.api import run_lock
run_lock.acquire(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


def _env() -> dict:
    return subprocess_env(WANDB_MODE="offline")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_live_holder_keeps_the_folder_and_a_killed_ones_lock_is_taken_over(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env=_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(run_lock.RunFolderInUse, match=rf"run folder {tmp_path} is in use by process "
                                                          rf"{holder.pid} \(host [^,]+, since [\d-]+ [\d:]+\)"):
            run_lock.acquire(tmp_path)
        assert issubclass(run_lock.RunFolderInUse, RunError)  # the CLI says it in one line
        assert str(holder.pid) in run_lock.holder(tmp_path)
    finally:
        holder.kill()  # kill -9: no chance to release anything
        holder.wait()
    run_lock.acquire(tmp_path)  # the kernel dropped the dead process's lock: taken over at once
    try:
        assert f"left locked by process {holder.pid}" in capsys.readouterr().err
        assert f"pid={os.getpid()} " in (tmp_path / ".lock").read_text()
    finally:
        run_lock.release(tmp_path)
    assert run_lock.holder(tmp_path) is None and (tmp_path / ".lock").read_text() == ""


def _train_losses(metrics: Path) -> list[int]:
    with metrics.open(newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")]


@pytest.mark.slow
def test_two_resumes_of_one_run_at_once_leave_one_writer(tmp_path):
    stopped = lit_seg("fit", "--config", str(EXPERIMENTS / "ccnet_r2.yaml"), *TINY_FIT, "--experiment", "two",
                      hook("SignalAtStep", step=1, signum=int(signal.SIGTERM)), cwd=tmp_path)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    (folder,) = (tmp_path / "runs" / "two").iterdir()
    run = str(folder.relative_to(tmp_path))
    # A resubmitted cluster job: the same resume twice at once; the winner holds the folder for a while.
    command = [sys.executable, "-m", "lit_seg", "fit", "--resume", run, hook("SleepAtStep", step=0, seconds=20)]
    both = [subprocess.Popen(command, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    results = [(p, *p.communicate(timeout=300)) for p in both]
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 1], [err[-2000:] for _, _, err in results]
    (winner, *_), (loser, _, err) = sorted(results, key=lambda r: r[0].returncode)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and lines[-1].startswith(
        f"lit-seg: error: run folder {run} is in use by process {winner.pid} (host "), lines[-3:]
    assert lines[-1].endswith("wait for it to end or stop it, then run this again")
    steps = _train_losses(folder / "metrics.csv")
    assert steps == sorted(set(steps)) and len(steps) == 6, steps  # each of the 6 steps once
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == sorted(
        p.name for p in (folder / "checkpoints").iterdir() if "-v" not in p.name)
    assert len(list((folder / "wandb").glob("offline-run-*"))) == 2  # the first part and one resume


@pytest.mark.slow
def test_a_killed_runners_run_goes_on_and_the_next_call_neither_trains_it_beside_nor_overwrites_its_log(tmp_path):
    """The local launcher killed with SIGKILL mid-run: its run's process finishes the run (it holds the
    run's slot); the next call waits for it instead of training the same run beside it, keeps the
    first attempt's log, and records the run once it ends."""
    overrides = [*TINY_FIT, hook("SleepAtStep", step=4, seconds=15)]
    ablate = [sys.executable, "-m", "lit_seg", "ablate", "--experiments-dir", str(EXPERIMENTS), "--name", "killed",
              "--experiments", "fcn", "--seeds", "0", "--no-cost", "--output_dir", str(tmp_path), "--", *overrides]
    slot = Cell("killed", EXPERIMENTS / "fcn.yaml", None, 0, tuple(overrides), tmp_path / "runs").slot
    runner = subprocess.Popen(ablate, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        # Until the run is asleep after step 4 (its first epoch's last.ckpt written at step 3).
        while not list(slot.glob("*/checkpoints/last.ckpt")):
            assert time.monotonic() < deadline and runner.poll() is None, "the run never wrote a checkpoint"
            time.sleep(0.5)
        time.sleep(2)
    finally:
        runner.kill()  # SIGKILL of the runner alone, not of its process group
        runner.wait()
    (first_log,) = slot.glob("attempt-*.log")
    holder = run_lock.holder(slot)
    assert holder is not None, "the run's process died with its runner"
    again = subprocess.run(ablate, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "held by process" in again.stdout and "waiting for it" in again.stdout
    (folder,) = [p for p in slot.iterdir() if p.is_dir()]
    assert list(slot.glob("attempt-*.log")) == [first_log]  # no attempt beside it, its log untouched
    text = first_log.read_text(errors="replace")
    assert "\x00" not in text and "lit-seg: run folder" in text
    steps = _train_losses(folder / "metrics.csv")
    assert Counter(steps).most_common(1)[0][1] == 1 and len(steps) == 6, steps
    (row,) = list(csv.DictReader((tmp_path / "killed.csv").open()))
    assert row["status"] == "finished" and row["run_folder"].endswith(folder.name)
