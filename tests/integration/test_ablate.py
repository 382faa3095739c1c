"""lit-seg ablate: experiments x seeds in one command, one results row per run, resumable."""

import csv
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lit_seg.models.heads import HEADS
from lit_seg.study.ablate import main as ablate_main
from tests.conftest import EXPERIMENTS, TINY_FIT, subprocess_env

ABLATE = [sys.executable, "-m", "lit_seg", "ablate"]


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
    spec.write_text(yaml.safe_dump({"experiments": ["fcn", "ccnet_r*"], "seeds": [0, 1],
                                    "overrides": ["--trainer.max_epochs=1", *TINY_FIT[2:]]}))
    # ccnet_r* also matches r2 and r3: narrow it from the command line, as a user would.
    # Two at a time (one thread each), as the README's suite runs.
    done = ablate(str(spec), "--experiments", "fcn", "ccnet_r1", "--results", str(tmp_path / "results"),
                  "--jobs", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "4 runs" in done.stdout and "0 already finished" in done.stdout
    rows = _rows(tmp_path / "results" / "tiny.csv")
    assert sorted((r["experiment"], r["seed"]) for r in rows) == [
        ("ccnet_r1", "0"), ("ccnet_r1", "1"), ("fcn", "0"), ("fcn", "1")]
    for row in rows:
        assert row["status"] == "finished"
        assert 0.0 <= float(row["val_mIoU_best"]) <= 1.0 and 0.0 <= float(row["val_mIoU_final"]) <= 1.0
        assert float(row["val_mIoU_best"]) >= float(row["val_mIoU_final"]) - 1e-6
        assert {"IoU/background", "IoU/object_red", "IoU/object_green", "IoU/object_blue"} <= set(row)
        assert int(row["steps"]) == 3 and float(row["wall_s"]) > 0
        folder = tmp_path / row["run_folder"]
        assert (folder / "summary.json").is_file() and folder.name.endswith(row["wandb_run_id"])
        first = next(r["val/mIoU"] for r in _rows(folder / "metrics.csv") if r.get("val/mIoU"))
        assert float(row["val_mIoU_first"]) == pytest.approx(float(first), abs=1e-5)
        assert row["wandb_group"] == "tiny" and (tmp_path / row["log"]).is_file()
        for column in ("head_params", "head_gflops", "model_gflops", "head_fwd_ms", "head_fwdbwd_ms", "head_peak_mib"):
            assert float(row[column]) > 0, column
    by_experiment = {r["experiment"]: r for r in rows}
    assert by_experiment["ccnet_r1"]["head"] == "CCHead" and by_experiment["ccnet_r1"]["recurrence"] == "1"
    assert "recurrence=1" in by_experiment["ccnet_r1"]["head_options"]
    assert by_experiment["fcn"]["head"] == "FCNHead" and by_experiment["fcn"]["recurrence"] == ""
    assert by_experiment["fcn"]["query_dependence"] == ""  # no attention maps
    assert 0 < float(by_experiment["ccnet_r1"]["query_dependence"]) < 1
    # Same seed, different heads: different runs; the head's cost does not depend on the seed.
    same_cost = [r for r in rows if r["experiment"] == "ccnet_r1"]
    assert same_cost[0]["head_fwdbwd_ms"] == same_cost[1]["head_fwdbwd_ms"]
    assert int(by_experiment["ccnet_r1"]["head_params"]) > int(by_experiment["fcn"]["head_params"])

    # The report: one table row per experiment, and the plot.
    table = (tmp_path / "results" / "tiny.md").read_text()
    assert "| `fcn` | FCNHead |" in table and "| `ccnet_r1` | CCHead |" in table
    assert (tmp_path / "results" / "tiny.png").stat().st_size > 0

    # Again: everything is finished, nothing runs, no new run folder appears.
    folders = sorted((tmp_path / "runs").glob("*/*"))
    again = ablate(str(spec), "--experiments", "fcn", "ccnet_r1", "--results", str(tmp_path / "results"), cwd=tmp_path)
    assert again.returncode == 0 and "4 already finished" in again.stdout and "running" not in again.stdout
    assert sorted((tmp_path / "runs").glob("*/*")) == folders
    assert _rows(tmp_path / "results" / "tiny.csv") == rows

    # A row lost (the runner killed right after its run ended): the finished run is recognised from
    # its log and folder and its row written again, without running it again.
    with (tmp_path / "results" / "tiny.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[:-1])
    resumed = ablate(str(spec), "--experiments", "fcn", "ccnet_r1", "--results", str(tmp_path / "results"),
                     "--no-cost", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "3 already finished" in resumed.stdout and ": running" not in resumed.stdout
    recovered = _rows(tmp_path / "results" / "tiny.csv")
    assert len(recovered) == 4 and recovered[-1]["run_folder"] == rows[-1]["run_folder"]
    assert recovered[-1]["val_mIoU_best"] == rows[-1]["val_mIoU_best"] and recovered[-1]["status"] == "finished"
    assert sorted((tmp_path / "runs").glob("*/*")) == folders

    # Other overrides are other runs: the finished run of the same experiment and seed is neither
    # skipped nor recovered from its log (it would pass the other runs' results off as its own).
    other = ablate(str(spec), "--experiments", "fcn", "--seeds", "0", "--results", str(tmp_path / "results"),
                   "--no-cost", "--", "--trainer.max_epochs=1", cwd=tmp_path)
    assert other.returncode == 0, other.stdout[-3000:] + other.stderr[-3000:]
    assert "0 already finished" in other.stdout and "fcn seed 0: running" in other.stdout
    new = [r for r in _rows(tmp_path / "results" / "tiny.csv") if r not in recovered]
    assert len(new) == 1 and new[0]["overrides"].endswith("--trainer.max_epochs=1")
    assert new[0]["run_folder"] not in {r["run_folder"] for r in recovered}
    assert new[0]["log"] != next(r["log"] for r in recovered if (r["experiment"], r["seed"]) == ("fcn", "0"))

    # Costs measured again (e.g. on a quiet machine) update every finished row, and run nothing.
    recost = ablate(str(spec), "--experiments", "fcn", "ccnet_r1", "--results", str(tmp_path / "results"),
                    "--remeasure-cost", cwd=tmp_path)
    assert recost.returncode == 0 and ": running" not in recost.stdout
    assert "cost of fcn" in recost.stdout and "cost of ccnet_r1" in recost.stdout
    final = [r for r in _rows(tmp_path / "results" / "tiny.csv") if r["overrides"] == rows[0]["overrides"]]
    assert len(final) == 4 and all(float(r["head_fwdbwd_ms"]) > 0 for r in final)
    assert [r["run_folder"] for r in final] == [r["run_folder"] for r in recovered]


def test_failed_run_is_recorded_and_retried(tmp_path):
    done = ablate("--name", "broken", "--experiments", "fcn", "--seeds", "0", "--no-cost",
                  "--results", str(tmp_path), "--", "--model.optimizer.init_args.lr=oops", cwd=tmp_path)
    assert done.returncode == 1
    assert "FAILED" in done.stdout
    (row,) = _rows(tmp_path / "broken.csv")
    assert row["status"] == "failed" and "lr" in (tmp_path / row["log"]).read_text()
    plan = ablate("--name", "broken", "--experiments", "fcn", "--seeds", "0", "--results", str(tmp_path),
                  "--dry-run", "--", "--model.optimizer.init_args.lr=oops", cwd=tmp_path)
    assert "0 already finished" in plan.stdout and "would run fcn seed 0" in plan.stdout


def _ablate_in_process(*args: str, capsys) -> tuple[int, str, str]:
    code = ablate_main(["--experiments-dir", str(EXPERIMENTS), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ablation_files_name_existing_experiments(tmp_path, capsys):
    files = sorted((EXPERIMENTS / "ablations").glob("*.yaml"))
    files = [f for f in files if f.name != "sweep.yaml"]
    assert {f.stem for f in files} >= {"all_heads", "ccnet_recurrence"}
    heads = {p.stem for p in EXPERIMENTS.glob("*.yaml")} - {"base"}
    for path in files:
        code, out, err = _ablate_in_process(str(path), "--dry-run", "--results", str(tmp_path), capsys=capsys)
        assert code == 0, err
        planned = {line.split()[2] for line in out.splitlines() if line.strip().startswith("would run")}
        assert planned and planned <= heads, path
    _, out, _ = _ablate_in_process(str(EXPERIMENTS / "ablations" / "all_heads.yaml"), "--dry-run", "--results",
                                   str(tmp_path), capsys=capsys)
    # "would run <experiment> on <task> seed <seed>" (all_heads names its task, global)
    planned = [(line.split()[2], line.split()[-1]) for line in out.splitlines() if "would run" in line]
    assert all(" on global seed " in line for line in out.splitlines() if "would run" in line)
    assert len(planned) == 3 * len(heads) and len(heads) == len(HEADS) + 1  # every head, and gc_backbone
    assert sorted({e for e, _ in planned}) == sorted(heads) and {s for _, s in planned} == {"0", "1", "2"}
    # Seed-major: every experiment's first seed comes before any second seed.
    assert {s for _, s in planned[:len(heads)]} == {"0"}


def test_unknown_experiment_is_one_line(tmp_path, capsys):
    code, _, err = _ablate_in_process("--name", "x", "--experiments", "ccnet_r9", "--results", str(tmp_path),
                                      capsys=capsys)
    assert code == 2
    assert err.startswith("ablate: error: no experiment matches 'ccnet_r9'") and "ccnet_r2" in err
    assert err.count("\n") == 1


@pytest.mark.slow
def test_run_cut_off_midway_goes_on_from_its_checkpoint(tmp_path):
    from tests.fault_runs import hook

    common = ["--name", "cut", "--experiments", "fcn", "--seeds", "0", "--no-cost", "--results", str(tmp_path)]
    tiny = ["--trainer.max_epochs=1", *TINY_FIT[2:]]
    # Ctrl-C reaches the run during its step 1 (what a Ctrl-C of the ablation does to its runs).
    # The same command again (the hook too: a resumed run goes on after step 1, where it fires no more).
    interrupted = [*tiny, hook("SignalAtStep", step=1, signum=int(signal.SIGINT))]
    first = ablate(*common, "--", *interrupted, cwd=tmp_path)
    assert first.returncode == 1 and "FAILED (exit 130)" in first.stdout
    (folder,) = (tmp_path / "runs" / "fcn").iterdir()
    assert (folder / "checkpoints" / "last.ckpt").is_file()
    again = ablate(*common, "--", *interrupted, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:]
    assert f"resuming {folder.relative_to(tmp_path)}" in again.stdout
    row = next(r for r in _rows(tmp_path / "cut.csv") if r["status"] == "finished")
    assert row["run_folder"] == str(folder.relative_to(tmp_path)) and int(row["steps"]) == 3
    assert list((tmp_path / "runs" / "fcn").iterdir()) == [folder]


def test_a_plan_piped_into_head_ends_without_a_traceback(tmp_path):
    """`lit-seg ablate ... --dry-run | head -1`: the reader stops early; the command says nothing more.
    A plan far longer than a pipe holds (about 0.5 MB against Linux's 64 kB), so the command is still
    writing when the reader closes it."""
    seeds = [str(seed) for seed in range(1000)]
    command = [sys.executable, "-m", "lit_seg", "ablate", "--experiments-dir", str(EXPERIMENTS), "--name", "piped",
               "--experiments", "*", "--seeds", *seeds, "--results", str(tmp_path), "--dry-run"]
    process = subprocess.Popen(command, cwd=tmp_path, env=subprocess_env(WANDB_MODE="disabled"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("ablation piped:")
    process.stdout.close()  # as `head -1` does after its line
    err = process.stderr.read()
    process.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert process.returncode == 1
