"""Run records (lit_seg/api/records.py): the model-code hash that decides when a result is stale,
and an ablation's results rows built from records."""

import inspect
import json

import pytest

from lit_seg.api import records
from lit_seg.api.records import RunRecord, code_hash, is_stale, model_code, normalized_code
from lit_seg.models import EncoderDecoder, build_encoder
from lit_seg.models.heads import HEADS
from lit_seg.study import ablate

SOURCE = '''"""A module docstring."""

import torch


def scale(x):
    """Twice x."""
    return 2 * x  # a comment
'''


def sources(**changed):
    """A source reader over the real modules, with some replaced (name -> text; None: deleted)."""
    def read(name):
        return changed[name] if name in changed else records._module_source(name)
    return read


def test_docstrings_comments_and_layout_do_not_change_the_code_hash():
    reworded = SOURCE.replace('"""Twice x."""', '"""Doubles its input (a new docstring)."""') \
                     .replace("# a comment", "# another comment").replace("2 * x", "2*x")
    assert normalized_code(reworded) == normalized_code(SOURCE)
    changed = SOURCE.replace("2 * x", "3 * x")
    assert normalized_code(changed) != normalized_code(SOURCE)
    # A function that only has a docstring still parses back.
    assert "pass" in normalized_code('def f():\n    """Only a docstring."""\n')


def model(name):
    return EncoderDecoder(build_encoder("resnet18", depth=3), lambda c, n: HEADS[name].build(c, n, channels=8), 3,
                          aux_weight=0.4, aux_channels=8)


def test_the_model_code_is_the_modules_that_build_the_model_and_nothing_else():
    ccnet = model_code(model("ccnet_r2"))["modules"]
    assert {"lit_seg.models.heads.ccnet", "lit_seg.models.attention.criss_cross", "lit_seg.models.heads.base",
            "lit_seg.models.heads.fcn",  # the auxiliary head
            "lit_seg.models.encoder", "lit_seg.models.encoder_decoder", "lit_seg.models.layers"} <= set(ccnet)
    assert not [m for m in ccnet if m.endswith(("non_local", "dual_attention", "ocnet"))], ccnet
    assert all(m.startswith("lit_seg.models.") for m in ccnet)  # the training loop, tools: not model code
    fcn = model_code(model("fcn"))["modules"]
    assert not [m for m in fcn if ".attention." in m], fcn


def test_a_change_to_a_models_own_code_makes_its_records_stale_and_nothing_else_does():
    entry = model_code(model("ccnet_r2"))
    assert not is_stale(entry)
    name = "lit_seg.models.attention.criss_cross"
    text = inspect.getsource(__import__(name, fromlist=["x"]))
    assert code_hash(entry["modules"], sources(**{name: text.replace('"""', '"""Reworded. ', 1)})) == entry["hash"]
    assert code_hash(entry["modules"], sources(**{"lit_seg.models.attention.non_local": "x = 1"})) == entry["hash"]
    assert code_hash(entry["modules"], sources(**{"lit_seg.study.report": "x = 1"})) == entry["hash"]
    fixed = text.replace("softmax", "log_softmax", 1)
    assert fixed != text and code_hash(entry["modules"], sources(**{name: fixed})) != entry["hash"]
    assert code_hash(entry["modules"], sources(**{name: None})) != entry["hash"]  # a module removed
    assert is_stale({**entry, "hash": "0" * 16})  # what a record made by other code holds
    assert not is_stale({}) and not is_stale(None)  # no hash (made before records had one): unknown


def write_run(slot, name, status, metrics, code=None, **extra):
    folder = slot / name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("seed_everything: 0\n")
    record = RunRecord(run_folder=str(folder), status=status, subcommand="fit", experiment="fcn", seed=0,
                       metrics=metrics, model_code=code or {"hash": "abc", "modules": []}, config_hash="c0ffee",
                       code={"commit": "1234", "dirty": False}, precision="32-true",
                       device={"name": "CPU X", "capability": "AVX2"},
                       parts=[{"wall_s": 10.0, "host": "h", "job": {"slurm_array_job_id": "7",
                                                                     "slurm_array_task_id": "2"}},
                              {"wall_s": 5.5, "host": "h2", "job": {}}][: 2 if status == "finished" else 1],
                       **extra)
    (folder / "record.json").write_text(json.dumps(record.to_dict()))
    return folder


def test_results_rows_come_from_the_newest_finished_record_and_keep_rows_made_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    experiment = tmp_path / "fcn.yaml"
    experiment.write_text("model:\n  head:\n    class_path: lit_seg.models.heads.FCNHead\n")
    cell = ablate.Cell("study", experiment, None, 0, ("--trainer.max_epochs=1",), tmp_path / "runs")
    write_run(cell.slot, "20260101-000000-aaaaaaaa", "failed", {}, error="ValueError: boom")
    write_run(cell.slot, "20260102-000000-bbbbbbbb", "finished", {"val_mIoU_final": 0.5, "IoU/a": 0.25})
    (cell.slot / "attempt-20260102-000000-99.log").write_text("log\n")
    elsewhere = {"ablation": "study", "experiment": "psp", "task": "", "seed": "0", "overrides": "",
                 "status": "finished", "val_mIoU_final": "0.7"}
    replaced = {**elsewhere, "experiment": "fcn", "overrides": "--trainer.max_epochs=1", "val_mIoU_final": "0.1"}
    rows = ablate.build_rows([cell], [elsewhere, replaced], {})
    assert rows[0] == elsewhere and len(rows) == 2  # kept: no run folder here; replaced by the record
    row = rows[1]
    assert row["status"] == "finished" and row["val_mIoU_final"] == 0.5 and row["IoU/a"] == 0.25
    assert row["run_folder"].endswith("bbbbbbbb") and row["log"].endswith("attempt-20260102-000000-99.log")
    assert (row["config_hash"], row["model_code_hash"], row["commit"], row["precision"]) == (
        "c0ffee", "abc", "1234", "32-true")
    assert row["device"] == "CPU X AVX2" and row["wall_s"] == 15.5 and row["host"] == "h2"
    assert row["head"] == "FCNHead" and row["overrides"] == "--trainer.max_epochs=1"
    # Written and read back, the file holds the same rows (the CSV is only a view of the records).
    ablate.write_rows(tmp_path / "study.csv", rows)
    again = ablate.read_rows(tmp_path / "study.csv")
    assert [r["run_folder"] for r in again] == ["", row["run_folder"]]
    assert again[1]["val_mIoU_final"] == "0.5" and again[1]["job_id"] == ""


def test_a_failed_attempt_alone_gives_a_failed_row_with_its_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    experiment = tmp_path / "fcn.yaml"
    experiment.write_text("{}\n")
    cell = ablate.Cell("study", experiment, None, 0, (), tmp_path / "runs")
    write_run(cell.slot, "20260101-000000-aaaaaaaa", "failed", {}, error="ValueError: boom")
    (row,) = ablate.build_rows([cell], [], {})
    assert row["status"] == "failed" and row["error"] == "ValueError: boom" and row["job_id"] == "7_2"
    assert ablate.cell_state(cell).state == "failed"


@pytest.mark.parametrize("status, state", [("finished", "finished"), ("interrupted", "interrupted"),
                                           ("running", "interrupted")])
def test_a_cells_state_from_its_records_and_lock(tmp_path, status, state):
    experiment = tmp_path / "fcn.yaml"
    experiment.write_text("{}\n")
    cell = ablate.Cell("study", experiment, None, 0, (), tmp_path / "runs")
    assert ablate.cell_state(cell).state == "pending"
    write_run(cell.slot, "20260101-000000-aaaaaaaa", status, {}, code=model_code(model("fcn")))
    # A record that says running with nobody holding the slot: its process died.
    assert ablate.cell_state(cell).state == state
    from lit_seg.api import run_lock

    run_lock.acquire(cell.slot, what="run")
    try:
        assert ablate.cell_state(cell).state == "running"
    finally:
        run_lock.release(cell.slot)
