"""The report and analysis of an ablation over tasks: the task profile's mean ± std (n) per head and
task against hand computations, the two-standard-deviation difference marks, the query dependence
per head and task, the per-task tables and the one-panel-per-task plot; CSVs without tasks keep
their single table."""

import math

import pandas as pd
import pytest
from PIL import Image

from lit_seg.study import analysis, report

# (experiment, task): final val/mIoU of seeds 0, 1, 2. FCN on reach 0.320 ± 0.020; on recurrence
# 0.520 ± 0.020.
FINAL = {
    ("fcn", "reach"): [0.30, 0.32, 0.34],
    ("ccnet_r2", "reach"): [0.90, 0.91, 0.92],      # 0.910 ± 0.010: 0.59 above, > 2 x 0.020: a difference
    ("gc", "reach"): [0.33, 0.35, 0.37],            # 0.350 ± 0.020: 0.03 above, < 2 x 0.020: none
    ("fcn", "recurrence"): [0.50, 0.52, 0.54],
    ("ccnet_r2", "recurrence"): [0.60, 0.62, 0.64],  # 0.620 ± 0.020: 0.10 above, > 0.040: a difference
    # 0.450 ± 0.050: 0.07 below; > 2 x FCN's 0.020 but not > 2 x its own 0.050 (the larger): none
    ("gc", "recurrence"): [0.40, 0.45, 0.50],
    ("danet_cam", "recurrence"): [0.30, 0.31, 0.32],  # 0.310 ± 0.010: 0.21 below: a difference
}
QUERY_DEPENDENCE = {("ccnet_r2", "reach"): [0.1, 0.2, 0.3], ("ccnet_r2", "recurrence"): [0.05, 0.05, 0.08]}
GFLOPS = {"fcn": 0.01, "ccnet_r2": 0.05, "gc": 0.04, "danet_cam": 0.03}
HEAD = {"fcn": "FCNHead", "ccnet_r2": "CCHead", "gc": "GCHead", "danet_cam": "DAHead"}


def write_csv(path, final=FINAL, tasks=True):
    rows = []
    for (experiment, task), values in final.items():
        for seed, value in enumerate(values):
            dependence = QUERY_DEPENDENCE.get((experiment, task))
            rows.append({"ablation": "study", "experiment": experiment, **({"task": task} if tasks else {}),
                         "head": HEAD[experiment], "seed": seed, "overrides": "", "status": "finished",
                         "val_mIoU_best": value + 0.01, "val_mIoU_final": value,
                         "query_dependence": dependence[seed] if dependence else "",
                         "head_gflops": GFLOPS[experiment] * (2 if task == "recurrence" else 1)})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_differs_is_two_standard_deviations_of_the_larger_spread():
    assert analysis.differs(0.62, 0.02, 0.52, 0.02) == 1.0
    assert analysis.differs(0.31, 0.01, 0.52, 0.02) == -1.0
    assert analysis.differs(0.45, 0.05, 0.52, 0.02) == 0.0  # 0.07 > 2 x 0.02, not > 2 x 0.05
    assert analysis.differs(0.55, 0.02, 0.52, 0.02) == 0.0
    assert math.isnan(analysis.differs(0.9, math.nan, 0.52, 0.02))  # one seed: cannot tell


def test_task_profile_values_and_marks(tmp_path):
    runs = analysis.load_csv(write_csv(tmp_path / "study.csv"))
    assert analysis.has_tasks(runs) and analysis.tasks(runs) == ["reach", "recurrence"]
    profile = analysis.task_profile(runs)
    # Head-list order (fcn, danet_cam, ccnet_r2, gc), then the ablation's task order.
    assert list(profile.index) == [("fcn", "reach"), ("fcn", "recurrence"), ("danet_cam", "recurrence"),
                                   ("ccnet_r2", "reach"), ("ccnet_r2", "recurrence"), ("gc", "reach"),
                                   ("gc", "recurrence")]
    assert profile.loc[("gc", "recurrence"), "mean"] == pytest.approx(0.45)
    assert profile.loc[("gc", "recurrence"), "std"] == pytest.approx(0.05)
    assert profile.loc[("ccnet_r2", "reach"), "query_dependence_mean"] == pytest.approx(0.2)
    assert profile.loc[("ccnet_r2", "recurrence"), "head_gflops"] == pytest.approx(0.10)
    table = analysis.format_profile(profile)
    assert list(table.columns) == ["reach", "recurrence"]
    assert list(table.index) == ["fcn", "danet_cam", "ccnet_r2", "gc"]
    assert table.loc["fcn"].tolist() == ["0.320 ± 0.020 (3)", "0.520 ± 0.020 (3)"]
    assert table.loc["ccnet_r2"].tolist() == ["0.910 ± 0.010 (3) ↑", "0.620 ± 0.020 (3) ↑"]
    assert table.loc["gc"].tolist() == ["0.350 ± 0.020 (3)", "0.450 ± 0.050 (3)"]
    assert table.loc["danet_cam"].tolist() == ["–", "0.310 ± 0.010 (3) ↓"]  # not run on reach
    dependence = analysis.query_dependence_profile(profile)
    assert dependence.loc["ccnet_r2"].tolist() == ["0.2000", "0.0600"]
    assert dependence.loc["fcn"].tolist() == ["–", "–"]


def test_report_gives_the_profile_and_a_table_per_task(tmp_path):
    md, png = report.report(write_csv(tmp_path / "study.csv"))
    text = md.read_text()
    lines = text.splitlines()
    assert "| experiment | reach | recurrence |" in lines
    assert "| `ccnet_r2` | 0.910 ± 0.010 (3) ↑ | 0.620 ± 0.020 (3) ↑ |" in lines
    assert "| `gc` | 0.350 ± 0.020 (3) | 0.450 ± 0.050 (3) |" in lines
    assert "| `danet_cam` | – | 0.310 ± 0.010 (3) ↓ |" in lines
    assert "more than two standard deviations apart, taking the larger of the two" in text
    assert "| `ccnet_r2` | 0.2000 | 0.0600 |" in lines  # query dependence per head and task
    # Each task's own table: best val/mIoU over that task's seeds only.
    reach = text.split("## Task reach")[1].split("## Task recurrence")[0]
    assert "| `fcn` | FCNHead | 0.330 ± 0.020 | 3 |" in reach and "danet_cam" not in reach
    assert "| `danet_cam` | DAHead | 0.320 ± 0.010 | 3 |" in text.split("## Task recurrence")[1]
    # The capacity heatmap: a column per task (3.2 inches each, 2.5 for labels and colour bar) and a
    # row per head (0.42 inches each, 1.6 for the title), at 110 dpi.
    assert Image.open(png).size == (round((3.2 * 2 + 2.5) * 110), int((0.42 * 4 + 1.6) * 110))
    # The capacity section comes first and states its rule and the seeds that disagree.
    assert text.index("## Can each head learn each task") < text.index("| experiment | reach | recurrence |")
    assert analysis.LEARNT_RULE in text


def test_capacity_profile_counts_the_seeds_that_learn_each_task(tmp_path):
    """Thresholds half-way from FCN's median (chance) to the best median (oracle), by hand:
    reach: chance 0.32, oracle 0.91, threshold 0.615; recurrence: chance 0.52, oracle 0.62, 0.57."""
    final = {**FINAL, ("gc", "reach"): [0.33, 0.70, 0.90],  # two of three seeds learn reach
             ("gc", "recurrence"): [0.40, 0.45, 0.58]}      # one of three learns recurrence
    runs = analysis.load_csv(write_csv(tmp_path / "study.csv", final))
    thresholds = analysis.learning_thresholds(runs)
    assert thresholds.loc["reach"].tolist() == pytest.approx([0.32, 0.91, 0.615])
    assert thresholds.loc["recurrence"].tolist() == pytest.approx([0.52, 0.62, 0.57])
    capacity = analysis.capacity_profile(runs)
    gc_reach, gc_recurrence = capacity.loc[("gc", "reach")], capacity.loc[("gc", "recurrence")]
    assert gc_reach["values"] == [0.33, 0.70, 0.90] and gc_reach["median"] == pytest.approx(0.70)
    assert (gc_reach["learnt"], gc_reach["can_learn"], gc_reach["reliable"]) == (2, True, False)
    assert (gc_recurrence["learnt"], gc_recurrence["can_learn"], gc_recurrence["reliable"]) == (1, True, False)
    ccnet = capacity.loc[("ccnet_r2", "reach")]
    assert (ccnet["learnt"], ccnet["fraction"], ccnet["reliable"]) == (3, 1.0, True)
    fcn = capacity.loc[("fcn", "recurrence")]  # 0.54 of FCN's own seeds is below 0.57
    assert (fcn["learnt"], fcn["can_learn"]) == (0, False)
    assert analysis.mixed_cells(capacity) == [("gc", "reach"), ("gc", "recurrence")]
    table = analysis.format_capacity(capacity)
    assert table.loc["gc", "reach"] == "0.700 [0.330 0.700 0.900] 2/3 ~"
    assert table.loc["ccnet_r2", "reach"] == "0.910 [0.900 0.910 0.920] 3/3 ✓ ↑"
    assert table.loc["danet_cam", "reach"] == "–"
    text = report.markdown_table(tmp_path / "study.csv")
    assert "Seeds disagree in 2 cells: gc on reach, gc on recurrence." in text


def test_csv_without_tasks_keeps_its_single_table(tmp_path):
    path = write_csv(tmp_path / "old.csv", {k: v for k, v in FINAL.items() if k[1] == "reach"}, tasks=False)
    runs = analysis.load_csv(path)
    assert runs["task"].tolist() == [""] * 9 and not analysis.has_tasks(runs)
    text = report.markdown_table(path)
    assert "Task profile" not in text and "## Task" not in text
    assert text.splitlines()[0].startswith("| experiment | head | mIoU_best (mean ± std) | n |")
    assert "| `fcn` | FCNHead | 0.330 ± 0.020 | 3 |" in text
    md, png = report.report(path)
    assert Image.open(png).size == (int(6.5 * 110), 5 * 110)  # the cost panel as before (no latency column)


def test_against_another_csv_compares_each_head_and_task_by_the_rule(tmp_path):
    this = write_csv(tmp_path / "bf16.csv")
    # The other ablation: ccnet_r2 on reach 0.880 ± 0.010 (0.03 below this one: > 2 x 0.010, a
    # difference), gc on reach the same values (none), and no danet_cam; fcn on reach one seed only.
    other_final = {**{k: v for k, v in FINAL.items() if k[0] != "danet_cam"},
                   ("ccnet_r2", "reach"): [0.87, 0.88, 0.89], ("fcn", "reach"): [0.31]}
    that = write_csv(tmp_path / "fp32.csv", other_final)
    table = analysis.compare_profiles(analysis.load_csv(this), analysis.load_csv(that))
    row = table.loc[("ccnet_r2", "reach")]
    assert (row["mean"], row["std"]) == pytest.approx((0.91, 0.01)) and row["n_other"] == 3
    assert row["mean_other"] == pytest.approx(0.88) and row["delta"] == pytest.approx(0.03)
    assert row["vs_other"] == 1.0
    assert table.loc[("gc", "recurrence"), "vs_other"] == 0.0 and table.loc[("gc", "reach"), "delta"] == 0.0
    assert math.isnan(table.loc[("fcn", "reach"), "vs_other"])  # one seed on the other side: cannot tell
    assert table.loc[("danet_cam", "recurrence"), "n"] == 3 and pd.isna(table.loc[("danet_cam", "recurrence"),
                                                                                    "mean_other"])
    # The file `lit-seg report bf16.csv --against fp32.csv` writes beside it.
    report.main([str(this), "--against", str(that)])
    lines = (tmp_path / "bf16_vs_fp32.md").read_text().splitlines()
    assert "| experiment | reach | recurrence |" in lines
    assert ("| `ccnet_r2` | 0.910 ± 0.010 vs 0.880 ± 0.010 (+0.030) ↑ | 0.620 ± 0.020 vs 0.620 ± 0.020 (+0.000) |"
            in lines)
    assert "| `danet_cam` | – | 0.310 ± 0.010 vs – |" in lines
    assert any("1 of 5 pairs with 2 or more seeds on both sides differ" in line for line in lines)


def test_runs_under_other_overrides_are_other_experiments(tmp_path):
    """One ablation called again with other overrides: its rows keep their own cells, never mixed
    into the means of the main set."""
    path = write_csv(tmp_path / "study.csv")
    rows = pd.read_csv(path)
    rows["overrides"] = "--trainer.precision=auto"
    again = rows[(rows["experiment"] == "gc") & (rows["task"] == "reach")].assign(
        overrides="--trainer.max_epochs=6", val_mIoU_final=[0.90, 0.91, 0.92])
    pd.concat([rows, again]).to_csv(path, index=False)
    profile = analysis.task_profile(analysis.load_csv(path))
    assert profile.loc[("gc", "reach"), "mean"] == pytest.approx(0.35)  # the main set's seeds only
    assert profile.loc[("gc [--trainer.max_epochs=6]", "reach"), "mean"] == pytest.approx(0.91)


def test_no_threshold_where_no_head_clearly_learnt_the_task(tmp_path):
    """Every head at chance: the best median is FCN's noise, and the half-way point 0.01 above
    chance is not two of FCN's standard deviations (0.02) above it: nobody "learns" the task."""
    final = {("fcn", "reach"): [0.30, 0.32, 0.34], ("gc", "reach"): [0.31, 0.34, 0.35],
             ("ccnet_r2", "reach"): [0.33, 0.34, 0.34]}
    runs = analysis.load_csv(write_csv(tmp_path / "study.csv", final))
    assert math.isnan(analysis.learning_thresholds(runs).loc["reach", "threshold"])
    capacity = analysis.capacity_profile(runs)
    assert not capacity["can_learn"].any() and analysis.mixed_cells(capacity) == []


def test_thresholds_come_from_the_main_set_of_overrides(tmp_path):
    """A second call with other overrides (gc trained longer, at 0.99) is not the task's oracle."""
    path = write_csv(tmp_path / "study.csv")
    rows = pd.read_csv(path)
    again = rows[(rows["experiment"] == "gc") & (rows["task"] == "reach")].assign(
        overrides="--trainer.max_epochs=6", val_mIoU_final=[0.99, 0.99, 0.99])
    pd.concat([rows, again]).to_csv(path, index=False)
    thresholds = analysis.learning_thresholds(analysis.load_csv(path))
    assert thresholds.loc["reach"].tolist() == pytest.approx([0.32, 0.91, 0.615])
    only_again = analysis.load_csv(path, overrides="--trainer.max_epochs=6")
    assert list(only_again["experiment"]) == ["gc"] * 3  # one set: its names stay plain
