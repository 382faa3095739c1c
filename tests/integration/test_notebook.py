"""notebooks/ablation_analysis.ipynb and lit_seg/study/analysis.py: the notebook runs top to bottom on a
small results fixture, its text twin holds the same cells, it is committed with the outputs of the
current task suite, and the loading/tabulating functions it uses are right (a fake W&B API mimics
wandb.Api().runs)."""

import csv
import math
import statistics
from pathlib import Path

import jupytext
import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient
from PIL import Image

from lit_seg.study import analysis
from tests.conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "ablation_analysis.ipynb"
TWIN = ROOT / "notebooks" / "ablation_analysis.py"
CLASSES = ["background", "object_red", "object_green", "object_blue"]

# (experiment, seed, val_mIoU_best, status): plausible numbers from the built-in data set.
RUNS = [
    ("fcn", 0, 0.7573, "finished"), ("fcn", 1, 0.6120, "finished"),
    ("ccnet_r1", 0, 0.8811, "finished"), ("ccnet_r1", 1, 0.8652, "finished"),
    ("ccnet_r2", 0, 0.9074, "finished"), ("ccnet_r2", 1, 0.9076, "finished"),
    ("ccnet_r3", 0, 0.9102, "finished"), ("ccnet_r3", 1, 0.9031, "finished"),
    ("ccnet_r3", 2, None, "failed"),
]
# query_dependence per finished attention run (FCN has none: an empty cell).
QUERY_DEPENDENCE = {("ccnet_r1", 0): 0.6132, ("ccnet_r1", 1): 0.6318, ("ccnet_r2", 0): 0.0521,
                    ("ccnet_r2", 1): 0.0484, ("ccnet_r3", 0): 0.0412, ("ccnet_r3", 1): 0.0447}
COSTS = {  # head_params, head_gflops, head_fwd_ms, head_fwdbwd_ms, head_peak_mib
    "fcn": (46211, 0.0133, 0.41, 1.32, 3.1),
    "ccnet_r1": (227029, 0.0412, 0.83, 2.61, 5.4),
    "ccnet_r2": (227029, 0.0455, 1.02, 3.30, 6.0),
    "ccnet_r3": (227029, 0.0498, 1.21, 3.98, 6.6),
}


def expected(experiment: str) -> str:
    """mean ± std (sample std) of val_mIoU_best over the finished runs, computed independently."""
    values = [v for e, _, v, status in RUNS if e == experiment and status == "finished"]
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def write_fixture(root: Path, runs=RUNS, name: str = "all_heads") -> Path:
    """``results/<name>.csv`` in the ablate.py contract and a run folder per run under ``root``,
    with tiny attention overlays (epochs 0 and 1, two images each) for the CCNet runs."""
    split = len(analysis.BEFORE_CLASSES)  # per-class IoU columns go just after these
    header = analysis.COLUMNS[:split] + [f"IoU/{c}" for c in CLASSES] + analysis.COLUMNS[split:]
    rows = []
    for i, (experiment, seed, best, status) in enumerate(runs):
        folder = f"runs/{experiment}/20261121-1600{i:02d}-run{i:05d}"
        recurrence = int(experiment[-1]) if experiment.startswith("ccnet") else ""
        head = "CCHead" if recurrence else "FCNHead"
        row = dict.fromkeys(header, "")
        options = f"channels=64 recurrence={recurrence}" if recurrence else "channels=64"
        # One set of overrides for the whole ablation, as ablate writes it (the seed is a column of its own).
        row.update(ablation=name, experiment=experiment, head=head, seed=seed, status=status, run_folder=folder,
                   recurrence=recurrence, head_options=options, overrides="--trainer.max_epochs=2",
                   wandb_group=name, wandb_run_id=f"run{i:05d}")
        if status == "finished":
            row.update(val_mIoU_best=best, val_mIoU_final=best - 0.002, val_pixel_acc_final=0.95 + best / 50,
                       val_mIoU_first=round(best - 0.3, 4),
                       params=11_403_541, steps=512, wall_s=160.0 + i,
                       query_dependence=QUERY_DEPENDENCE.get((experiment, seed), ""))
            row.update({f"IoU/{c}": round(0.98 if c == "background" else best - 0.01 * k, 4)
                        for k, c in enumerate(CLASSES)})
            row.update(zip(["head_params", "head_gflops", "head_fwd_ms", "head_fwdbwd_ms", "head_peak_mib"],
                           COSTS[experiment]))
        rows.append(row)
        run_dir = root / folder
        run_dir.mkdir(parents=True)
        (run_dir / "summary.json").write_text("{}")
        if recurrence and status == "finished":
            (run_dir / "attention").mkdir()
            for epoch in (0, 1):
                for index in (0, 1):
                    colour = (40 * recurrence, 120 * epoch, 200 * index)
                    Image.new("RGB", (8, 6), colour).save(run_dir / "attention" / f"epoch{epoch}_{index}.png")
    path = root / "results" / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def execute_notebook(tmp_path: Path, monkeypatch, results_csv: Path) -> nbformat.NotebookNode:
    monkeypatch.setenv("SOURCE", "csv")
    monkeypatch.setenv("RESULTS_CSV", str(results_csv))
    monkeypatch.setenv("RUNS_ROOT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # kernel "python3": the current interpreter (jupyter_client runs a "python" kernelspec with
    # sys.executable, and ipykernel's own spec when none is installed).
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def outputs(nb, mime: str) -> list[str]:
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and mime == "text/plain":
                found.append(out.text)
            elif mime in out.get("data", {}):
                found.append(out.data[mime])
    return found


# ------------------------------------------------------------------------------------ notebook


def test_notebook_runs_on_results_fixture(tmp_path, monkeypatch):
    nb = execute_notebook(tmp_path, monkeypatch, write_fixture(tmp_path))
    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors
    text = "\n".join(outputs(nb, "text/plain"))
    for experiment in ("fcn", "ccnet_r1", "ccnet_r2", "ccnet_r3"):
        assert experiment in text
        assert expected(experiment) in text  # the summary table's mean ± std
    assert "9 runs from" in text and "finished: 8, other: 1" in text
    # the plots: cost panels, CCNet curve, per-class heatmap, attention gallery
    assert len(outputs(nb, "image/png")) == 4
    assert "No attention maps" not in text and "No CCNet" not in text
    # questions whose experiments are missing say so instead of failing
    assert "GC vs non-local: needs nonlocal" in text and "DANet branches: needs danet" in text


def test_notebook_runs_on_ccnet_only_ablation_without_costs(tmp_path, monkeypatch):
    """A smaller ablation: CCNet only, no cost or per-class columns, no attention maps, a failed run."""
    path = tmp_path / "ccnet.csv"
    pd.DataFrame({"experiment": ["ccnet_r1", "ccnet_r1", "ccnet_r2", "ccnet_r2"], "seed": [0, 1, 0, 1],
                  "status": ["finished", "finished", "finished", "failed"],
                  "val_mIoU_best": [0.88, 0.86, 0.91, ""]}).to_csv(path, index=False)
    nb = execute_notebook(tmp_path, monkeypatch, path)
    assert not [out for cell in nb.cells for out in cell.get("outputs", []) if out.output_type == "error"]
    text = "\n".join(outputs(nb, "text/plain"))
    assert "0.870 ± 0.014" in text and "Attention vs FCN: needs fcn" in text
    assert "No per-class IoU" in text and "No attention maps" in text and "No cost columns" in text
    assert "Only R = 2" not in text and "CCNet by recurrence" not in text  # R = 1 and 2: compared


def test_notebook_twin_holds_the_same_cells():
    ipynb, py = jupytext.read(NOTEBOOK), jupytext.read(TWIN)
    assert [(c.cell_type, c.source) for c in ipynb.cells] == [(c.cell_type, c.source) for c in py.cells]
    assert [c.metadata.get("tags", []) for c in ipynb.cells] == [c.metadata.get("tags", []) for c in py.cells]
    assert ipynb.cells[1].metadata.get("tags") == ["parameters"]
    assert ipynb.metadata["jupytext"]["formats"] == "ipynb,py:percent"


def test_committed_notebook_shows_the_current_suite():
    """Committed with its outputs (docs/notebook.md renders them), from the file it reads by default,
    results/tasks.csv, as that file is now: a changed suite fails here until the notebook runs again
    (`scripts/run jupyter execute --inplace notebooks/ablation_analysis.ipynb`)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code), "every cell ran"
    outs = [out for cell in code for out in cell.outputs]
    assert not [out for out in outs if out.output_type == "error" or out.get("name") == "stderr"]
    text = "\n".join(outputs(nb, "text/plain"))
    assert str(ROOT) not in text + "\n".join(outputs(nb, "text/html")), "the outputs name this machine's folders"
    suite = analysis.load_csv(ROOT / "results" / "tasks.csv")
    assert f"{len(suite)} runs from results/tasks.csv" in text
    first = analysis.tasks(suite)[0]
    assert f"Sections 1-7: task {first} ({(suite['task'] == first).sum()} runs)" in text
    # Section 1's table for that task: each head's mean ± std, computed here from the CSV.
    table = analysis.format_table(analysis.summarize(suite[suite["task"] == first].reset_index(drop=True)))
    html = "\n".join(outputs(nb, "text/html"))
    for experiment, cell in table["mIoU_best (mean ± std)"].items():
        assert f"<td>{cell}</td>" in html, (experiment, cell)
    # Cost panels, CCNet curve, per-class heatmap, and the attention gallery of the suite's run folders.
    assert len(outputs(nb, "image/png")) == 4


# ------------------------------------------------------------------------ lit_seg.study.analysis


@pytest.fixture
def fixture_runs(tmp_path) -> pd.DataFrame:
    return analysis.load_csv(write_fixture(tmp_path))


def test_load_csv_contract(fixture_runs):
    runs = fixture_runs
    split = len(analysis.BEFORE_CLASSES)
    assert list(runs.columns) == analysis.COLUMNS[:split] + [f"IoU/{c}" for c in CLASSES] + analysis.COLUMNS[split:]
    assert len(runs) == 9 and runs["status"].tolist().count("failed") == 1
    assert runs["recurrence"].fillna(0).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 3]
    assert runs["seed"].dtype == "Int64" and math.isnan(runs.loc[8, "val_mIoU_best"])


def test_load_csv_glob_and_missing(tmp_path):
    write_fixture(tmp_path / "a", RUNS[:2], name="one")
    write_fixture(tmp_path / "a", RUNS[2:4], name="two")
    assert len(analysis.load_csv(tmp_path / "a" / "results" / "*.csv")) == 4
    with pytest.raises(FileNotFoundError, match="no results CSV"):
        analysis.load_csv(tmp_path / "nothing.csv")


def test_summarize_mean_std_n_failed(fixture_runs):
    summary = analysis.summarize(fixture_runs)
    assert list(summary.index) == ["fcn", "ccnet_r1", "ccnet_r2", "ccnet_r3"]
    assert summary.loc["fcn", "mean"] == pytest.approx((0.7573 + 0.6120) / 2)
    assert summary.loc["fcn", "std"] == pytest.approx(statistics.stdev([0.7573, 0.6120]))
    assert summary.loc["ccnet_r3", "n"] == 2 and summary.loc["ccnet_r3", "failed"] == 1
    assert summary.loc["ccnet_r2", "head_gflops"] == pytest.approx(0.0455)
    table = analysis.format_table(summary)
    assert table.loc["ccnet_r2", "mIoU_best (mean ± std)"] == expected("ccnet_r2")
    assert table.loc["ccnet_r3", "failed"] == 1
    assert summary.loc["fcn", "first_mean"] == pytest.approx((0.7573 + 0.6120) / 2 - 0.3)
    assert table.loc["fcn", "mIoU at 1st validation (mean)"] == f"{(0.7573 + 0.6120) / 2 - 0.3:.3f}"
    r2 = [QUERY_DEPENDENCE["ccnet_r2", s] for s in (0, 1)]
    assert summary.loc["ccnet_r2", "query_dependence_mean"] == pytest.approx(statistics.mean(r2))
    assert table.loc["ccnet_r2", "query dependence (mean ± std)"] == (
        f"{statistics.mean(r2):.4f} ± {statistics.stdev(r2):.4f}")
    assert table.loc["fcn", "query dependence (mean ± std)"] == "–"  # no attention maps


def test_report_table_shows_query_dependence_and_reads_csvs_from_before_it(tmp_path):
    from lit_seg.study import report

    path = write_fixture(tmp_path)
    r1 = [QUERY_DEPENDENCE["ccnet_r1", s] for s in (0, 1)]
    table = report.markdown_table(path)
    header = table.splitlines()[0].split(" | ")
    row = next(line for line in table.splitlines() if line.startswith("| `ccnet_r1` |")).split(" | ")
    column = header.index("query dependence (mean ± std)")
    assert row[column] == f"{statistics.mean(r1):.4f} ± {statistics.stdev(r1):.4f}" and "Query dependence:" in table
    # A CSV written before the column existed: read as NaN, and the table goes without it.
    old = pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns=["query_dependence"])
    old.to_csv(path, index=False)
    assert analysis.load_csv(path)["query_dependence"].isna().all()
    assert "query dependence" not in report.markdown_table(path).lower()


def test_format_mean_std():
    assert analysis.format_mean_std(0.90783, 0.000586) == "0.908 ± 0.001"
    assert analysis.format_mean_std(0.9, math.nan) == "0.900"
    assert analysis.format_mean_std(math.nan, math.nan) == "–"


def test_compare_gives_delta_and_welch_t(fixture_runs):
    table = analysis.compare(analysis.summarize(fixture_runs), ["fcn", "ccnet_r2", "gc"], baseline="fcn")
    assert list(table.index) == ["fcn", "ccnet_r2"]
    delta = statistics.mean([0.9074, 0.9076]) - statistics.mean([0.7573, 0.6120])
    t = delta / math.sqrt(statistics.variance([0.9074, 0.9076]) / 2 + statistics.variance([0.7573, 0.6120]) / 2)
    assert table.loc["ccnet_r2", "Δ vs fcn"] == f"{delta:+.3f}"
    assert table.loc["ccnet_r2", "t"] == f"{t:+.1f}" and table.loc["fcn", "t"] == table.loc["fcn", "Δ vs fcn"] == ""


def test_per_class_is_mean_over_finished_seeds(fixture_runs):
    table = analysis.per_class(fixture_runs)
    assert list(table.columns) == CLASSES and list(table.index) == ["fcn", "ccnet_r1", "ccnet_r2", "ccnet_r3"]
    assert table.loc["ccnet_r1", "object_red"] == pytest.approx((0.8811 - 0.01 + 0.8652 - 0.01) / 2, abs=1e-4)


def test_ccnet_curve(fixture_runs):
    curve = analysis.ccnet_curve(fixture_runs)
    assert list(curve.index) == [1, 2, 3] and curve["n"].tolist() == [2, 2, 2]
    assert curve.loc[3, "mean"] == pytest.approx((0.9102 + 0.9031) / 2)
    assert curve.loc[2, "head_fwdbwd_ms"] == pytest.approx(3.30)
    # recurrence from the experiment name when the column is empty; nothing without CCNet rows
    runs = fixture_runs.assign(recurrence=pd.NA, head_options=pd.NA)
    assert list(analysis.ccnet_curve(analysis.normalize(runs)).index) == [1, 2, 3]
    assert analysis.ccnet_curve(fixture_runs[fixture_runs["experiment"] == "fcn"]).empty


def test_attention_gallery_picks_latest_epoch_of_lowest_seed(tmp_path, fixture_runs):
    gallery = analysis.attention_gallery(fixture_runs, tmp_path)
    assert gallery["experiment"].tolist() == ["ccnet_r1", "ccnet_r2", "ccnet_r3"]  # fcn has no attention
    assert gallery["task"].tolist() == ["", "", ""]
    first = gallery.iloc[0]
    assert first["seed"] == 0 and first["epoch"] == 1 and Path(first["path"]).name == "epoch1_0.png"
    assert Path(first["path"]).parent.parent.name == "20261121-160002-run00002"
    assert analysis.attention_gallery(fixture_runs, tmp_path / "elsewhere").empty


def test_attention_gallery_has_one_image_per_experiment_and_task(tmp_path, fixture_runs):
    runs = fixture_runs.assign(task=["reach" if seed == 0 else "binding" for seed in fixture_runs["seed"]])
    gallery = analysis.attention_gallery(runs, tmp_path)
    assert list(zip(gallery["experiment"], gallery["task"], gallery["seed"])) == [
        (e, t, s) for e in ("ccnet_r1", "ccnet_r2", "ccnet_r3") for t, s in (("reach", 0), ("binding", 1))]
    assert len(set(gallery["path"])) == 6


# ---------------------------------------------------------------------- W&B: a faithful fake API


class FakeSummary:
    """What wandb.apis.public.summary.HTTPSummary offers: keys(), get(), items(), [] (not a dict)."""

    def __init__(self, values: dict):
        self._values = values

    def keys(self):
        return self._values.keys()

    def get(self, key, default=None):
        return self._values.get(key, default)

    def items(self):
        return ((k, self[k]) for k in self.keys())

    def __getitem__(self, key):
        return self._values[key]

    def __contains__(self, key):
        return key in self._values


class FakeRun:
    """wandb.apis.public.Run as api.runs() yields it: id (the 8-character run id), name (display
    name), group, tags, state, config (flat dict, values unwrapped), summary, history()."""

    def __init__(self, run_id, config, summary, history=(), state="finished", group="ablation", tags=()):
        self.id, self.name, self.group, self.state = run_id, f"{config.get('experiment')}-seed0", group, state
        self.tags = list(tags)
        self.config = config
        self.summary = FakeSummary(summary)
        self._history = list(history)
        self.history_calls = []

    def history(self, samples=500, keys=None, x_axis="_step", pandas=True, stream="default"):
        self.history_calls.append(keys)
        rows = [r for r in self._history if not keys or all(k in r for k in keys)]
        return pd.DataFrame.from_records(rows) if pandas else rows


class FakeApi:
    def __init__(self, runs):
        self._runs = runs
        self.calls = []

    def runs(self, path=None, filters=None, order="+created_at", per_page=50, include_sweeps=False, lazy=True):
        self.calls.append((path, filters))
        group = (filters or {}).get("group")
        return iter([r for r in self._runs if group is None or r.group == group])


def wandb_config(experiment, head, seed, **init_args):
    config = {"experiment": experiment, "seed_everything": seed,
              "model.head.class_path": f"lit_seg.models.heads.{head}", "model.encoder_name": "resnet18",
              "trainer.max_epochs": 4}
    config.update({f"model.head.init_args.{k}": v for k, v in init_args.items()})
    return config


def test_load_wandb_builds_the_csv_schema(tmp_path, fixture_runs):
    iou = {f"val/IoU/{c}": 0.9 - 0.01 * k for k, c in enumerate(CLASSES)}
    full = FakeRun("a1b2c3d4", wandb_config("ccnet_r2", "CCHead", 0, channels=64, recurrence=2),
                   {"val/mIoU_best": 0.9076, "val/mIoU": 0.9074, "val/pixel_acc": 0.987, **iou, "params": 11403541,
                    "head_params": 227029, "head_gflops": 0.0455, "trainer/global_step": 511, "_runtime": 160.2,
                    "val/attention": {"_type": "images/separated"}},
                   tags=["ccnet_r2", "CCHead"])
    history = [{"_step": 10, "train/loss": 0.5}, {"_step": 127, "val/mIoU": 0.70, "val/IoU/background": 0.95},
               {"_step": 255, "val/mIoU": 0.74, "val/IoU/background": 0.97},
               {"_step": 511, "val/mIoU": 0.73, "val/IoU/background": 0.96}]
    from_history = FakeRun("e5f6g7h8", wandb_config("fcn", "FCNHead", 1, channels=64), {"_runtime": 150.0},
                           history=history)
    crashed = FakeRun("i9j0k1l2", wandb_config("ccnet_r2", "CCHead", 2, recurrence=2), {}, state="crashed")
    other = FakeRun("zzzzzzzz", wandb_config("fcn", "FCNHead", 0), {}, group="another")
    (tmp_path / "runs" / "ccnet_r2" / "20261121-160315-a1b2c3d4").mkdir(parents=True)
    api = FakeApi([full, from_history, crashed, other])

    runs = analysis.load_wandb(api, "me/lit-seg", "ablation", runs_root=tmp_path)

    assert api.calls == [("me/lit-seg", {"group": "ablation"})]
    assert list(runs.columns) == list(fixture_runs.columns)  # the CSV's schema, same classes
    assert runs["wandb_run_id"].tolist() == ["a1b2c3d4", "e5f6g7h8", "i9j0k1l2"]
    first = runs.iloc[0]
    assert (first["experiment"], first["head"], first["recurrence"], first["seed"]) == ("ccnet_r2", "CCHead", 2, 0)
    assert first["head_options"] == "channels=64 recurrence=2" and first["ablation"] == "ablation"
    assert first["val_mIoU_best"] == 0.9076 and first["IoU/object_red"] == pytest.approx(0.89)
    assert first["run_folder"] == "runs/ccnet_r2/20261121-160315-a1b2c3d4" and first["steps"] == 511
    assert math.isnan(first["head_fwd_ms"]) and len(full.history_calls) == 1  # for the first validation only
    assert math.isnan(first["val_mIoU_first"])  # its history is empty
    second = runs.iloc[1]
    assert second["val_mIoU_best"] == 0.74 and second["val_mIoU_final"] == 0.73  # from the history
    assert second["val_mIoU_first"] == 0.70
    assert second["IoU/background"] == 0.96 and math.isnan(second["IoU/object_red"])
    assert pd.isna(second["recurrence"]) and pd.isna(second["run_folder"])
    assert runs["status"].tolist() == ["finished", "finished", "failed"]
    summary = analysis.summarize(runs)
    assert summary.loc["ccnet_r2", "n"] == 1 and summary.loc["ccnet_r2", "failed"] == 1

    with pytest.raises(LookupError, match="no W&B runs"):
        analysis.load_wandb(api, "me/lit-seg", "missing")


def test_other_metrics_are_mean_and_std_over_finished_runs():
    df = analysis.normalize(pd.DataFrame({
        "experiment": ["fcn", "fcn", "fcn", "ccnet_r2", "old"],
        "seed": [0, 1, 2, 0, 0],
        "status": ["finished", "finished", "failed", "finished", "finished"],
        "val_mIoU_best": [0.5, 0.6, 0.1, 0.7, 0.4],
        "val_mAcc_final": [0.5, 0.7, 0.0, 0.8, None],
        "val_aAcc_final": [0.9, 0.9, 0.0, 0.95, None],
        "val_mDice_final": [0.6, 0.8, 0.0, 0.85, None],
    }))
    table = analysis.other_metrics(df)
    assert list(table.index) == ["fcn", "ccnet_r2"]  # head-list order; "old" predates the columns
    assert table.loc["fcn", "mAcc"] == "0.600 ± 0.141" and table.loc["fcn", "n"] == 2  # the failed run is out
    assert table.loc["ccnet_r2", "mDice"] == "0.850" and table.loc["fcn", "aAcc"] == "0.900 ± 0.000"
    assert analysis.other_metrics(df.drop(columns=list(analysis.OTHER_METRICS))).empty
