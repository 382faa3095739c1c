"""lit-seg ablate (local launcher): experiments x seeds in one command, one results row per run built
from the runs' records, resumable, stale rows found and rerun."""

import csv
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lit_seg.api.records import read_record
from lit_seg.models.heads import HEADS
from lit_seg.study.ablate import Cell
from lit_seg.study.ablate import main as ablate_main
from tests.conftest import EXPERIMENTS, TINY_FIT, subprocess_env
from tests.fault_runs import hook

ABLATE = [sys.executable, "-m", "lit_seg", "ablate"]
TINY = ["--trainer.max_epochs=1", *TINY_FIT[2:]]


def ablate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``lit-seg ablate`` in a fresh process in ``cwd``, the repository's experiments looked up."""
    env = subprocess_env(WANDB_MODE="offline")
    return subprocess.run([*ABLATE, "--experiments-dir", str(EXPERIMENTS), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_runs_every_experiment_and_seed_then_resumes_without_rerunning(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({"experiments": ["fcn", "ccnet_r*"], "seeds": [0, 1], "overrides": TINY}))
    results = tmp_path / "results"
    # ccnet_r* also matches r2 and r3: narrow it from the command line, as a user would.
    # Two at a time (one thread each), as the README's suite runs.
    done = ablate(str(spec), "--experiments", "fcn", "ccnet_r1", "--output_dir", str(results), "--jobs", "2",
                  cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "4 runs" in done.stdout and "0 already finished" in done.stdout
    rows = _rows(results / "tiny.csv")
    assert sorted((r["experiment"], r["seed"]) for r in rows) == [
        ("ccnet_r1", "0"), ("ccnet_r1", "1"), ("fcn", "0"), ("fcn", "1")]
    for row in rows:
        assert row["status"] == "finished" and row["error"] == ""
        assert 0.0 <= float(row["val_mIoU_best"]) <= 1.0 and 0.0 <= float(row["val_mIoU_final"]) <= 1.0
        assert float(row["val_mIoU_best"]) >= float(row["val_mIoU_final"]) - 1e-6
        assert {"IoU/background", "IoU/object_red", "IoU/object_green", "IoU/object_blue"} <= set(row)
        assert int(row["steps"]) == 3 and float(row["wall_s"]) > 0
        folder = tmp_path / row["run_folder"]
        cell = Cell("tiny", EXPERIMENTS / f"{row['experiment']}.yaml", None, int(row["seed"]), tuple(TINY),
                    tmp_path / "runs")
        assert folder.parent == cell.slot and folder.name.endswith(row["wandb_run_id"])
        record = read_record(folder)
        assert record.status == "finished" and record.identity["ablation"] == "tiny"
        assert (row["config_hash"], row["model_code_hash"]) == (record.config_hash, record.model_code["hash"])
        assert row["precision"] == "32-true" and row["device"] and row["commit"] == (record.code["commit"] or "")
        first = next(r["val/mIoU"] for r in _rows(folder / "metrics.csv") if r.get("val/mIoU"))
        assert float(row["val_mIoU_first"]) == pytest.approx(float(first), abs=1e-5)
        log = tmp_path / row["log"]
        assert row["wandb_group"] == "tiny" and log.parent == cell.slot and "lit-seg: run folder" in log.read_text()
        for column in ("head_params", "head_gflops", "model_gflops", "head_fwd_ms", "head_fwdbwd_ms", "head_peak_mib"):
            assert float(row[column]) > 0, column
    by_experiment = {r["experiment"]: r for r in rows}
    assert by_experiment["ccnet_r1"]["head"] == "CCHead" and by_experiment["ccnet_r1"]["recurrence"] == "1"
    assert "recurrence=1" in by_experiment["ccnet_r1"]["head_options"]
    assert by_experiment["fcn"]["head"] == "FCNHead" and by_experiment["fcn"]["recurrence"] == ""
    assert by_experiment["fcn"]["query_dependence"] == ""  # no attention maps
    assert 0 < float(by_experiment["ccnet_r1"]["query_dependence"]) < 1
    assert by_experiment["fcn"]["model_code_hash"] != by_experiment["ccnet_r1"]["model_code_hash"]
    # Same seed, different heads: different runs; the head's cost does not depend on the seed.
    same_cost = [r for r in rows if r["experiment"] == "ccnet_r1"]
    assert same_cost[0]["head_fwdbwd_ms"] == same_cost[1]["head_fwdbwd_ms"]
    assert int(by_experiment["ccnet_r1"]["head_params"]) > int(by_experiment["fcn"]["head_params"])

    # The report: one table row per experiment, and the plot.
    table = (results / "tiny.md").read_text()
    assert "| `fcn` | FCNHead |" in table and "| `ccnet_r1` | CCHead |" in table
    assert (results / "tiny.png").stat().st_size > 0

    # Again: everything is finished, nothing runs, no new run folder appears.
    folders = sorted((tmp_path / "runs").rglob("record.json"))
    again = ablate(str(spec), "--experiments", "fcn", "ccnet_r1", "--output_dir", str(results), cwd=tmp_path)
    assert again.returncode == 0 and "4 already finished" in again.stdout and ": running" not in again.stdout
    assert sorted((tmp_path / "runs").rglob("record.json")) == folders
    assert _rows(results / "tiny.csv") == rows

    # The results file lost: the same call's status rebuilds it from the records, equal to the one written.
    (results / "tiny.csv").unlink()
    status = ablate(str(spec), "--experiments", "fcn", "ccnet_r1", "--output_dir", str(results), "--status",
                    cwd=tmp_path)
    assert status.returncode == 0 and status.stdout.count("  finished ") == 4, status.stdout
    assert _rows(results / "tiny.csv") == rows

    # Other overrides are other runs, in their own slots: the finished run of the same experiment and
    # seed is neither skipped nor taken for its own (it would pass the other runs' results off as its own).
    other = ablate(str(spec), "--experiments", "fcn", "--seeds", "0", "--output_dir", str(results), "--no-cost",
                   "--", "--trainer.limit_val_batches=1", cwd=tmp_path)
    assert other.returncode == 0, other.stdout[-3000:] + other.stderr[-3000:]
    assert "0 already finished" in other.stdout and "fcn seed 0: running" in other.stdout
    new = [r for r in _rows(results / "tiny.csv") if r not in rows]
    assert len(new) == 1 and new[0]["overrides"].endswith("--trainer.limit_val_batches=1")
    assert Path(new[0]["run_folder"]).parent.parent != Path(rows[0]["run_folder"]).parent.parent
    assert len(_rows(results / "tiny.csv")) == 5  # the earlier call's rows are kept


def test_failed_run_is_recorded_and_retried(tmp_path):
    done = ablate("--name", "broken", "--experiments", "fcn", "--seeds", "0", "--no-cost",
                  "--output_dir", str(tmp_path), "--", "--model.optimizer.init_args.lr=oops", cwd=tmp_path)
    assert done.returncode == 1
    assert "FAILED" in done.stdout
    (row,) = _rows(tmp_path / "broken.csv")
    assert row["status"] == "failed" and "lr" in row["error"] and "lr" in (tmp_path / row["log"]).read_text()
    assert read_record(tmp_path / row["run_folder"]).status == "failed"
    plan = ablate("--name", "broken", "--experiments", "fcn", "--seeds", "0", "--output_dir", str(tmp_path),
                  "--dry-run", "--", "--model.optimizer.init_args.lr=oops", cwd=tmp_path)
    assert "0 already finished" in plan.stdout and "would run fcn seed 0" in plan.stdout


@pytest.mark.slow
def test_a_stale_run_is_reported_and_rerun_with_rerun_stale(tmp_path):
    common = ["--name", "fresh", "--experiments", "fcn", "--seeds", "0", "--no-cost", "--output_dir", str(tmp_path),
              "--", *TINY]
    assert ablate(*common, cwd=tmp_path).returncode == 0
    (row,) = _rows(tmp_path / "fresh.csv")
    folder = tmp_path / row["run_folder"]
    # The run's model code as another version of lit-seg had it: its record's hash differs from today's.
    record = json.loads((folder / "record.json").read_text())
    record["model_code"]["hash"] = "0123456789abcdef"
    (folder / "record.json").write_text(json.dumps(record))
    status = ablate(*common[:-len(TINY) - 1], "--status", "--", *TINY, cwd=tmp_path)
    assert "  stale " in status.stdout and "model code changed since" in status.stdout, status.stdout
    report = (tmp_path / "fresh.md").read_text()
    assert "stale" in report, report
    unchanged = ablate(*common, cwd=tmp_path)  # without --rerun-stale it stays as it is, said
    assert unchanged.returncode == 0 and "1 already finished" in unchanged.stdout
    rerun = ablate(*common[:-len(TINY) - 1], "--rerun-stale", "--", *TINY, cwd=tmp_path)
    assert rerun.returncode == 0 and "fcn seed 0: running" in rerun.stdout, rerun.stdout[-2000:]
    (new,) = _rows(tmp_path / "fresh.csv")
    assert new["run_folder"] != row["run_folder"] and Path(new["run_folder"]).parent == Path(row["run_folder"]).parent
    assert new["model_code_hash"] == row["model_code_hash"] != "0123456789abcdef"
    # The same seed, the same code: the rerun's numbers are the first run's, to the last digit.
    assert new["val_mIoU_final"] == row["val_mIoU_final"]


def _ablate_in_process(*args: str, capsys) -> tuple[int, str, str]:
    code = ablate_main(["--experiments-dir", str(EXPERIMENTS), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ablation_files_name_existing_experiments(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = sorted((EXPERIMENTS / "ablations").glob("*.yaml"))
    files = [f for f in files if f.name != "sweep.yaml"]
    assert {f.stem for f in files} >= {"all_heads", "ccnet_recurrence"}
    heads = {p.stem for p in EXPERIMENTS.glob("*.yaml")} - {"base"}
    interventions = {p.stem for p in EXPERIMENTS.glob("interventions/*.yaml")}  # on the heads, not heads
    for path in files:
        code, out, err = _ablate_in_process(str(path), "--dry-run", "--output_dir", str(tmp_path), capsys=capsys)
        assert code == 0, err
        planned = {line.split()[2] for line in out.splitlines() if line.strip().startswith("would run")}
        assert planned and planned <= heads | interventions, path
    _, out, _ = _ablate_in_process(str(EXPERIMENTS / "ablations" / "all_heads.yaml"), "--dry-run", "--output_dir",
                                   str(tmp_path), capsys=capsys)
    # "would run <experiment> on <task> seed <seed>" (all_heads names its task, global)
    planned = [(line.split()[2], line.split()[-1]) for line in out.splitlines() if "would run" in line]
    assert all(" on global seed " in line for line in out.splitlines() if "would run" in line)
    assert len(planned) == 3 * len(heads) and len(heads) == len(HEADS) + 1  # every head, and gc_backbone
    assert sorted({e for e, _ in planned}) == sorted(heads) and {s for _, s in planned} == {"0", "1", "2"}
    # Seed-major: every experiment's first seed comes before any second seed.
    assert {s for _, s in planned[:len(heads)]} == {"0"}


def test_unknown_experiment_is_one_line(tmp_path, capsys):
    code, _, err = _ablate_in_process("--name", "x", "--experiments", "ccnet_r9", "--output_dir", str(tmp_path),
                                      capsys=capsys)
    assert code == 2
    assert err.startswith("ablate: error: no experiment matches 'ccnet_r9'") and "ccnet_r2" in err
    assert err.count("\n") == 1


@pytest.mark.slow
def test_run_cut_off_midway_goes_on_from_its_checkpoint(tmp_path):
    common = ["--name", "cut", "--experiments", "fcn", "--seeds", "0", "--no-cost", "--output_dir", str(tmp_path)]
    # Ctrl-C reaches the run during its step 1 (what a Ctrl-C of the ablation does to its runs).
    # The same command again (the hook too: a resumed run goes on after step 1, where it fires no more).
    interrupted = [*TINY, hook("SignalAtStep", step=1, signum=int(signal.SIGINT))]
    first = ablate(*common, "--", *interrupted, cwd=tmp_path)
    assert first.returncode == 1 and "FAILED" in first.stdout
    cell = Cell("cut", EXPERIMENTS / "fcn.yaml", None, 0, tuple(interrupted), tmp_path / "runs")
    (folder,) = [p for p in cell.slot.iterdir() if p.is_dir()]
    assert (folder / "checkpoints" / "last.ckpt").is_file() and read_record(folder).status == "interrupted"
    again = ablate(*common, "--", *interrupted, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:]
    (row,) = _rows(tmp_path / "cut.csv")
    assert row["status"] == "finished" and Path(row["run_folder"]).name == folder.name and int(row["steps"]) == 3
    assert [p for p in cell.slot.iterdir() if p.is_dir()] == [folder]
    logs = sorted(cell.slot.glob("attempt-*.log"))
    assert len(logs) == 2 and "resuming" in logs[1].read_text()  # each attempt its own log, the first kept
    assert len(read_record(folder).parts) == 2


def test_a_plan_piped_into_head_ends_without_a_traceback(tmp_path):
    """`lit-seg ablate ... --dry-run | head -1`: the reader stops early; the command says nothing more.
    A plan far longer than a pipe holds (about 0.5 MB against Linux's 64 kB), so the command is still
    writing when the reader closes it."""
    seeds = [str(seed) for seed in range(1000)]
    command = [sys.executable, "-m", "lit_seg", "ablate", "--experiments-dir", str(EXPERIMENTS), "--name", "piped",
               "--experiments", "*", "--seeds", *seeds, "--output_dir", str(tmp_path), "--dry-run"]
    process = subprocess.Popen(command, cwd=tmp_path, env=subprocess_env(WANDB_MODE="disabled"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("ablation piped:")
    process.stdout.close()  # as `head -1` does after its line
    err = process.stderr.read()
    process.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert process.returncode == 1


def test_status_of_an_unstarted_plan_is_pending_and_writes_nothing(tmp_path):
    done = ablate("--name", "nothing", "--experiments", "fcn", "psp", "--seeds", "0", "--output_dir", str(tmp_path),
                  "--status", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.count("  pending ") == 2 and "2 pending" in done.stdout
    assert not (tmp_path / "nothing.csv").exists()
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)
