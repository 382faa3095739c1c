"""lit-seg ablate over tasks: the plan (experiments x tasks x seeds, seed-major), the task overlay's
place in the run's command and the cost measurement, resume keys with and without a task, and the
unknown-task error. Dry runs and plain calls only: nothing is trained."""

import csv
from pathlib import Path

import yaml

from lit_seg.models.heads import HEADS
from lit_seg.study import ablate
from tests.conftest import EXPERIMENTS


def experiments_dir(root: Path) -> Path:
    """Two experiments and two task overlays (their contents do not matter to the plan)."""
    (root / "tasks").mkdir(parents=True)
    for name in ("fcn", "ccnet_r2"):
        (root / f"{name}.yaml").write_text("_base_: base.yaml\n")
    for task in ("reach", "recurrence"):
        (root / "tasks" / f"{task}.yaml").write_text(f"data:\n  init_args:\n    task: {task}\n")
    return root


def dry_run(root: Path, results: Path, *args: str, capsys) -> tuple[int, list[str], str]:
    code = ablate.main(["--name", "study", "--experiments-dir", str(root), "--output_dir", str(results),
                        "--dry-run", *args])
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_plan_is_seed_major_then_task_then_experiment(tmp_path, capsys):
    root = experiments_dir(tmp_path / "experiments")
    code, lines, _ = dry_run(root, tmp_path, "--experiments", "fcn", "ccnet_r2", "--tasks", "reach", "recurrence",
                             "--seeds", "0", "1", capsys=capsys)
    assert code == 0
    assert lines[0].startswith("ablation study: 2 experiments x 2 tasks (reach, recurrence) x 2 seeds = 8 runs, "
                               "0 already finished")
    assert lines[1:] == [f"  would run {e} on {t} seed {s}" for s in (0, 1) for t in ("reach", "recurrence")
                         for e in ("fcn", "ccnet_r2")]
    # The same order from the plan function, with the overlays' paths; no tasks: one None, no overlay.
    fcn, cc, reach = root / "fcn.yaml", root / "ccnet_r2.yaml", root / "tasks" / "reach.yaml"
    assert ablate.plan_runs([fcn, cc], [reach], [0, 1]) == [(fcn, reach, 0), (cc, reach, 0), (fcn, reach, 1),
                                                            (cc, reach, 1)]
    assert ablate.plan_runs([fcn], [None], [2]) == [(fcn, None, 2)]


def test_without_tasks_the_plan_and_the_run_are_as_before(tmp_path, capsys):
    root = experiments_dir(tmp_path / "experiments")
    code, lines, _ = dry_run(root, tmp_path, "--experiments", "fcn", "--seeds", "3", capsys=capsys)
    assert code == 0 and lines[0].startswith("ablation study: 1 experiments x 1 seeds = 1 runs, ")
    assert lines[1:] == ["  would run fcn seed 3"]
    cell = ablate.Cell("study", Path("experiments/fcn.yaml"), None, 3, ("--trainer.max_epochs=1",))
    assert cell.configs == [Path("experiments/fcn.yaml")] and cell.label == "fcn seed 3"
    assert cell.slot == Path("runs/ablations/study/trainer.max_epochs=1/fcn-seed3")
    assert cell.key == ablate.run_key("fcn", "", 3, "--trainer.max_epochs=1")


def test_task_overlay_comes_right_after_the_experiment_and_names_the_slot(tmp_path):
    experiment, task = Path("experiments/ccnet_r2.yaml"), Path("experiments/tasks/recurrence.yaml")
    cell = ablate.Cell("study", experiment, task, 1, ("--trainer.max_epochs=1",))
    assert cell.configs == [experiment, task]  # the overrides still win over both
    assert cell.slot.name == "ccnet_r2-recurrence-seed1" and cell.label == "ccnet_r2 on recurrence seed 1"
    # Other overrides, another folder of slots: their runs are never taken for each other's.
    other = ablate.Cell("study", experiment, task, 1, ("--trainer.max_epochs=2",))
    assert other.slot.parent != cell.slot.parent and other.key != cell.key
    assert ablate.Cell("study", experiment, task, 1).slot.parent == Path("runs/ablations/study/default")


def test_cost_is_measured_with_the_task_overlay_and_its_batch_size(tmp_path):
    overlay = tmp_path / "small.yaml"
    overlay.write_text("data:\n  init_args:\n    batch_size: 4\n")
    specs = []

    def runner(spec):
        specs.append(spec)
        return {"error": "not measured in this test"}

    assert ablate.measure_cost(EXPERIMENTS / "fcn.yaml", ["--trainer.max_epochs=1"], runner, overlay) == {}
    assert specs[0]["config"] == str(EXPERIMENTS / "fcn.yaml")
    assert specs[0]["overrides"] == ["--config", str(overlay), "--trainer.max_epochs=1"]
    assert ablate._batch_size(EXPERIMENTS / "fcn.yaml", [], overlay) == 4
    assert ablate._batch_size(EXPERIMENTS / "fcn.yaml", []) == 16  # experiments/base.yaml's
    assert ablate._batch_size(EXPERIMENTS / "fcn.yaml", ["--data.init_args.batch_size=8"], overlay) == 8


def test_harness_builds_the_experiment_with_the_overlay(tmp_path):
    from lit_seg.study import harness

    overlay = tmp_path / "small.yaml"
    overlay.write_text("data:\n  init_args:\n    task: global\n    image_size: [32, 64]\n    batch_size: 2\n")
    _, features, _, size = harness.experiment_head(str(EXPERIMENTS / "fcn.yaml"), ["--config", str(overlay)])
    assert size == (32, 64) and tuple(features[0].shape) == (2, 3, 32, 64)


def test_a_finished_run_on_one_task_does_not_skip_another(tmp_path, capsys):
    root = experiments_dir(tmp_path / "experiments")
    write_csv(tmp_path / "study.csv", [
        {"ablation": "study", "experiment": "fcn", "task": "reach", "seed": 0, "overrides": "", "status": "finished"},
        {"ablation": "study", "experiment": "fcn", "task": "recurrence", "seed": 0, "overrides": "",
         "status": "failed"},
    ])
    code, lines, _ = dry_run(root, tmp_path, "--experiments", "fcn", "--tasks", "reach", "recurrence", "--seeds", "0",
                             capsys=capsys)
    assert code == 0 and "2 runs, 1 already finished" in lines[0]
    assert lines[1:] == ["  would run fcn on recurrence seed 0"]
    # The same finished row does not count for the ablation without tasks either.
    code, lines, _ = dry_run(root, tmp_path, "--experiments", "fcn", "--seeds", "0", capsys=capsys)
    assert "0 already finished" in lines[0] and lines[1:] == ["  would run fcn seed 0"]
    assert ablate.run_key("fcn", "reach", 0, "") != ablate.run_key("fcn", "recurrence", 0, "")


def test_a_csv_from_before_the_task_column_still_resumes(tmp_path, capsys):
    root = experiments_dir(tmp_path / "experiments")
    old = [{"ablation": "study", "experiment": "fcn", "seed": 0, "overrides": "", "status": "finished",
            "val_mIoU_best": "0.9"}]
    write_csv(tmp_path / "study.csv", old)
    code, lines, _ = dry_run(root, tmp_path, "--experiments", "fcn", "--seeds", "0", "1", capsys=capsys)
    assert code == 0 and "2 runs, 1 already finished" in lines[0]
    assert lines[1:] == ["  would run fcn seed 1"]
    # Rewritten (after the next run): the row keeps its key, with an empty task.
    rows = ablate.read_rows(tmp_path / "study.csv")
    ablate.write_rows(tmp_path / "study.csv", rows)
    (row,) = ablate.read_rows(tmp_path / "study.csv")
    assert row["task"] == "" and ablate.row_key(row) == ablate.run_key("fcn", "", 0, "")


def test_unknown_task_is_one_line(tmp_path, capsys):
    root = experiments_dir(tmp_path / "experiments")
    code, _, err = dry_run(root, tmp_path, "--experiments", "fcn", "--tasks", "reach", "beacon", capsys=capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("ablate: error: unknown task 'beacon'") and "(have: reach, recurrence)" in err


def test_task_given_as_a_path(tmp_path, capsys):
    root = experiments_dir(tmp_path / "experiments")
    elsewhere = tmp_path / "mine.yaml"
    elsewhere.write_text("data:\n  init_args:\n    batch_size: 4\n")
    assert ablate.task_files([str(elsewhere), "reach"], root / "tasks") == [elsewhere, root / "tasks" / "reach.yaml"]
    code, lines, _ = dry_run(root, tmp_path, "--experiments", "fcn", "--tasks", str(elsewhere), "--seeds", "0",
                             capsys=capsys)
    assert code == 0 and lines[1:] == ["  would run fcn on mine seed 0"]


def test_tasks_ablation_is_every_head_on_three_tasks():
    spec = ablate.load_ablation(EXPERIMENTS / "ablations" / "tasks.yaml")
    # The head list, in its order: a new head makes this fail until it is added to the file.
    assert spec["experiments"] == list(HEADS) and "gc_backbone" not in spec["experiments"]
    assert spec["tasks"] == ["reach", "recurrence", "binding"] and spec["seeds"] == [0, 1, 2]
    assert "Built-in tasks" in spec["description"]
    text = (EXPERIMENTS / "ablations" / "tasks.yaml").read_text()
    assert "scripts/run lit-seg ablate experiments/ablations/tasks.yaml --jobs 2" in text
    # bf16 autocast: the suite within its 180 min (docs/notes/history.md); results/archive/tasks_fp32.csv is fp32
    assert yaml.safe_load(text)["overrides"] == ["--trainer.precision=auto"]


def test_the_cityscapes_ablation_is_every_head_on_4_gpu_slurm_jobs_of_batch_8():
    spec = ablate.load_ablation(EXPERIMENTS / "ablations" / "cityscapes.yaml")
    assert spec["experiments"] == [f"cityscapes/{name}" for name in HEADS] and spec["seeds"] == [0, 1, 2]
    assert [p.name for p in ablate.experiment_files(spec["experiments"])] == [f"{name}.yaml" for name in HEADS]
    assert spec["launcher"] == "slurm" and spec["slurm"]["gpus_per_node"] == 4
    # 4 processes x 2 images: mmseg's batch of 8.
    assert "--trainer.devices=4" in spec["overrides"] and "--data.init_args.batch_size=2" in spec["overrides"]


def test_more_seeds_go_exactly_to_the_cells_whose_seeds_disagree(tmp_path):
    """reach: FCN (chance) 0.35, the best median 0.90 (ccnet_r2): threshold 0.625. ccnet_r2 learns it
    on every seed, gc on one of three (mixed): only gc on reach gets seeds 3 and 4."""
    root = experiments_dir(tmp_path / "experiments")
    (root / "gc.yaml").write_text("_base_: base.yaml\n")
    values = {"fcn": [0.34, 0.35, 0.36], "ccnet_r2": [0.89, 0.90, 0.91], "gc": [0.36, 0.37, 0.88]}
    rows = [{"ablation": "study", "experiment": experiment, "task": "reach", "seed": seed, "status": "finished",
             "val_mIoU_final": value, "val_mIoU_best": value}
            for experiment, seeds in values.items() for seed, value in enumerate(seeds)]
    write_csv(tmp_path / "study.csv", rows)
    cells = [ablate.Cell("study", root / f"{experiment}.yaml", root / "tasks" / "reach.yaml", seed)
             for experiment in values for seed in (0, 1, 2)]
    more = ablate.mixed_seed_cells(tmp_path / "study.csv", cells, [3, 4])
    assert [(c.experiment.stem, c.task_name, c.seed) for c in more] == [("gc", "reach", 3), ("gc", "reach", 4)]
    assert more[0].overrides == cells[0].overrides and more[0].runs_root == cells[0].runs_root


def test_more_seeds_are_decided_on_the_calls_own_overrides(tmp_path):
    """The same ablation called with other overrides: the seeds of that set alone decide which cells
    disagree, whichever set has more rows in the results file."""
    root = experiments_dir(tmp_path / "experiments")
    (root / "gc.yaml").write_text("_base_: base.yaml\n")
    mine = {"fcn": [0.34, 0.35, 0.36], "ccnet_r2": [0.89, 0.90, 0.91], "gc": [0.36, 0.37, 0.88]}  # gc mixed
    other = {name: [0.35, 0.36, 0.37] for name in ("fcn", "ccnet_r2", "gc", "psp", "aspp")}  # more rows, all chance
    rows = [{"ablation": "study", "experiment": experiment, "task": "reach", "seed": seed, "status": "finished",
             "overrides": overrides, "val_mIoU_final": value, "val_mIoU_best": value}
            for overrides, values in (("--trainer.max_epochs=1", mine), ("", other))
            for experiment, seeds in values.items() for seed, value in enumerate(seeds)]
    write_csv(tmp_path / "study.csv", rows)
    cells = [ablate.Cell("study", root / f"{experiment}.yaml", root / "tasks" / "reach.yaml", seed,
                         ("--trainer.max_epochs=1",)) for experiment in mine for seed in (0, 1, 2)]
    more = ablate.mixed_seed_cells(tmp_path / "study.csv", cells, [3, 4])
    assert [(c.experiment.stem, c.seed, c.overrides) for c in more] == [
        ("gc", 3, ("--trainer.max_epochs=1",)), ("gc", 4, ("--trainer.max_epochs=1",))]


def test_the_ranks_of_a_slurm_job_follow_rank_zeros_decision(tmp_path, monkeypatch):
    """DDP inside a SLURM job: rank zero decides (here: a new run folder) and writes it down, whole;
    rank one reads the same decision instead of making its own (which would name another folder)."""
    root = experiments_dir(tmp_path / "experiments")
    cell = ablate.Cell("study", root / "fcn.yaml", None, 0, (), tmp_path / "runs")
    cell.slot.mkdir(parents=True)
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    decision = ablate._decide(cell, rerun_stale=False)
    assert decision["action"] == "new" and Path(decision["folder"]).parent == cell.slot
    monkeypatch.setenv("RANK", "1")
    assert ablate._decide(cell, rerun_stale=False) == decision
    assert not list(cell.slot.glob(".*.tmp"))  # the note was renamed into place
