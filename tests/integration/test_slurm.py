"""lit-seg ablate --launcher slurm against a real SLURM (scripts/slurm_cluster.sh starts a one-node
cluster here; CI starts it and sets LIT_SEG_REQUIRE_SLURM=1, so these tests never skip there)."""

import csv
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from lit_seg.api.records import read_record
from lit_seg.study.ablate import Cell
from tests.conftest import EXPERIMENTS, ROOT, TINY_FIT, subprocess_env
from tests.fault_runs import hook

pytestmark = pytest.mark.slow
TINY = ["--trainer.max_epochs=1", *TINY_FIT[2:]]
# One CPU per job: two jobs side by side on the 2-core node, one thread each, as `--jobs 2` locally.
SLURM = ["--launcher", "slurm", "--cpus-per-task", "1", "--mem-gb", "4", "--timeout-min", "20"]


def cluster_is_up() -> bool:
    try:
        return "UP" in subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if not cluster_is_up():
        message = "no SLURM cluster answers here: start one with scripts/slurm_cluster.sh (as root)"
        if os.environ.get("LIT_SEG_REQUIRE_SLURM"):
            pytest.fail(message)
        pytest.skip(message)


def ablate(*args: str, cwd: Path, wait: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lit_seg", "ablate", "--experiments-dir", str(EXPERIMENTS), *args]
    return subprocess.run(command, cwd=cwd, env=subprocess_env(WANDB_MODE="offline"), capture_output=True,
                          text=True, timeout=timeout)


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def steps(folder: Path) -> list[int]:
    with (folder / "metrics.csv").open(newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1.0)


def queued(cwd: Path, name: str) -> dict:
    return json.loads((cwd / "runs" / "ablations" / name / "slurm" / "queued.json").read_text())


def test_a_job_array_gives_one_finished_row_per_run_bit_identical_to_the_local_launcher(tmp_path):
    plan = ["--name", "tiny", "--experiments", "fcn", "ccnet_r1", "--seeds", "0", "1", "--no-cost"]
    on_slurm, local = tmp_path / "slurm", tmp_path / "local"
    on_slurm.mkdir()
    local.mkdir()
    done = ablate(*plan, *SLURM, "--output_dir", str(on_slurm), "--", *TINY, cwd=on_slurm)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "submitted 4 runs as SLURM job array" in done.stdout
    slurm_rows = rows(on_slurm / "tiny.csv")
    assert sorted((r["experiment"], r["seed"], r["status"]) for r in slurm_rows) == [
        ("ccnet_r1", "0", "finished"), ("ccnet_r1", "1", "finished"), ("fcn", "0", "finished"),
        ("fcn", "1", "finished")]
    array = {job.split("_")[0] for job in queued(on_slurm, "tiny").values()}
    for row in slurm_rows:
        record = read_record(on_slurm / row["run_folder"])
        assert record.status == "finished" and record.config_hash and record.model_code["hash"]
        assert record.job["slurm_array_job_id"] in array and row["job_id"].startswith(record.job["slurm_array_job_id"])
        assert record.job["slurm_node"] and record.device["threads"] == 1
    # The same plan through the local launcher (two at a time, one thread each): the same numbers.
    here = ablate(*plan, "--jobs", "2", "--output_dir", str(local), "--", *TINY, cwd=local)
    assert here.returncode == 0, here.stdout[-3000:] + here.stderr[-3000:]
    metrics = ["val_mIoU_best", "val_mIoU_final", "val_mIoU_first", "val_aAcc_final", "query_dependence",
               "IoU/background", "IoU/object_red"]
    by_key = {(r["experiment"], r["seed"]): r for r in rows(local / "tiny.csv")}
    for row in slurm_rows:
        assert [row[m] for m in metrics] == [by_key[row["experiment"], row["seed"]][m] for m in metrics]


def test_a_cancelled_job_is_resumed_by_the_next_call(tmp_path):
    plan = ["--name", "cancelled", "--experiments", "fcn", "--seeds", "0", "--no-cost", "--output_dir",
            str(tmp_path)]
    # Two epochs of 3 steps: the first validation writes last.ckpt at step 3; after step 4 the run
    # waits for a signal (scancel's SIGTERM), so the cancellation lands in the middle of training.
    slow = [*TINY_FIT, hook("SleepUntilSignal", step=4)]
    submitted = ablate(*plan, *SLURM, "--no-wait", "--", *slow, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    slot = Cell("cancelled", EXPERIMENTS / "fcn.yaml", None, 0, tuple(slow), tmp_path / "runs").slot
    wait_for(lambda: list(slot.glob("*/checkpoints/last.ckpt")), 240, "the run's first checkpoint")
    status = ablate(*plan, *SLURM, "--status", "--", *slow, cwd=tmp_path)
    assert "  running " in status.stdout and "job " in status.stdout and "node " in status.stdout, status.stdout
    (job,) = queued(tmp_path, "cancelled").values()
    subprocess.run(["scancel", job], check=True)
    wait_for(lambda: job.split("_")[0] not in subprocess.run(["squeue", "--noheader", "--format=%i", "--array"],
                                                              capture_output=True, text=True).stdout,
             120, "the cancelled job to leave the queue")
    (folder,) = [p for p in slot.iterdir() if p.is_dir()]
    cut = read_record(folder)
    assert (cut.status, cut.error) == ("interrupted", "stopped by SIGTERM")  # saved within SLURM's grace period
    again = ablate(*plan, *SLURM, "--", *slow, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    (row,) = rows(tmp_path / "cancelled.csv")
    assert row["status"] == "finished" and Path(row["run_folder"]).name == folder.name
    assert Counter(steps(folder)).most_common(1)[0][1] == 1 and len(steps(folder)) == 6
    assert len(read_record(folder).parts) == 2


def test_a_job_that_reaches_its_time_limit_is_requeued_and_finishes(tmp_path):
    plan = ["--name", "limit", "--experiments", "fcn", "--seeds", "0", "--no-cost", "--output_dir", str(tmp_path)]
    # A two-minute limit, warned (SIGUSR2) 30 s before it, or up to a minute earlier (SLURM's own
    # latitude): after its first step the run waits for the warning, which so always comes in the
    # middle of training; the requeued job resumes from the checkpoint saved then.
    long = [*TINY, hook("SleepUntilSignal", step=1)]
    done = ablate(*plan, "--launcher", "slurm", "--cpus-per-task", "1", "--mem-gb", "4", "--timeout-min", "2",
                  "--signal-delay-s", "30", "--", *long, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (row,) = rows(tmp_path / "limit.csv")
    folder = tmp_path / row["run_folder"]
    record = read_record(folder)
    assert row["status"] == "finished" and len(record.parts) >= 2, record.parts
    assert record.parts[0]["status"] == "interrupted" and record.parts[0]["error"] == "stopped by SIGUSR2"
    assert int(record.job.get("slurm_restart_count", 0)) >= 1  # the same job, requeued
    assert [p for p in folder.parent.iterdir() if p.is_dir()] == [folder]  # resumed, not started again
    # Only submitit requeued: once per interrupted part, and Lightning's own SLURM requeue (an
    # hpc_ckpt_*.ckpt written, then `scontrol requeue`) never acted.
    interrupted = [part for part in record.parts if part["status"] == "interrupted"]
    assert int(record.job["slurm_restart_count"]) == len(interrupted)
    assert not list(folder.rglob("hpc_ckpt_*.ckpt"))
    assert Counter(steps(folder)).most_common(1)[0][1] == 1 and len(steps(folder)) == 3


def test_two_submitters_of_one_ablation_never_train_a_run_twice(tmp_path):
    plan = ["--name", "twice", "--experiments", "fcn", "psp", "--seeds", "0", "--no-cost", "--output_dir",
            str(tmp_path)]
    command = [sys.executable, "-m", "lit_seg", "ablate", "--experiments-dir", str(EXPERIMENTS), *plan, *SLURM,
               "--", *TINY]
    both = [subprocess.Popen(command, cwd=tmp_path, env=subprocess_env(WANDB_MODE="offline"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in both]
    assert [p.returncode for p in both] == [0, 0], [o[0][-2000:] + o[1][-2000:] for o in outs]
    for experiment in ("fcn", "psp"):
        slot = Cell("twice", EXPERIMENTS / f"{experiment}.yaml", None, 0, tuple(TINY), tmp_path / "runs").slot
        (folder,) = [p for p in slot.iterdir() if p.is_dir()]  # one run, though two jobs were given it
        assert len(steps(folder)) == 3 and len(read_record(folder).parts) == 1
    assert sorted(r["status"] for r in rows(tmp_path / "twice.csv")) == ["finished", "finished"]


def test_a_run_that_fails_in_its_job_gets_a_failed_row_and_is_retried(tmp_path):
    plan = ["--name", "broken", "--experiments", "fcn", "--seeds", "0", "--no-cost", "--output_dir", str(tmp_path)]
    done = ablate(*plan, *SLURM, "--", "--model.optimizer.init_args.lr=oops", cwd=tmp_path)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    (row,) = rows(tmp_path / "broken.csv")
    assert row["status"] == "failed" and "lr" in row["error"] and row["job_id"]
    assert "lr" in (tmp_path / row["log"]).read_text()
    plan_again = ablate(*plan, "--dry-run", "--", "--model.optimizer.init_args.lr=oops", cwd=tmp_path)
    assert "would run fcn seed 0" in plan_again.stdout


def test_the_cluster_script_is_idempotent():
    done = subprocess.run(["bash", str(ROOT / "scripts" / "slurm_cluster.sh")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "already running" in done.stderr, done.stderr


