"""Precision by capability: `--trainer.precision auto` is bf16 autocast where the machine computes in
bf16, fp32 elsewhere, and the run's record keeps the choice."""

import pytest

from lit_seg import api
from lit_seg.train import precision
from lit_seg.train.trainer import Trainer
from tests.conftest import EXPERIMENTS


@pytest.mark.parametrize("flags, expected", [
    (frozenset({"avx2", "avx512f", "avx512_bf16"}), "bf16-mixed"),
    (frozenset({"avx2", "amx_bf16", "amx_tile"}), "bf16-mixed"),
    (frozenset({"avx2", "fma"}), "32-true"),  # the AVX2-only EPYC: bf16 would be emulated, 7x slower
    (frozenset(), "32-true"),
])
def test_auto_is_bf16_exactly_where_the_cpu_computes_in_it(monkeypatch, flags, expected, caplog):
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: False)
    chosen, reason = precision.resolve_precision("cpu")
    assert chosen == expected and ("computes in bf16" in reason) == (expected == "bf16-mixed")
    with caplog.at_level("INFO"):
        trainer = Trainer(precision="auto", accelerator="cpu", logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False)
    assert trainer.precision == expected
    assert f"lit-seg: precision auto: {expected}, since {reason}" in caplog.text


def test_every_other_precision_is_lightnings():
    assert Trainer(precision="32-true", accelerator="cpu", logger=False).precision == "32-true"
    assert Trainer(precision="bf16-mixed", accelerator="cpu", logger=False).precision == "bf16-mixed"


def test_the_command_line_takes_auto_and_resolves_it_in_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parts = api.compose(EXPERIMENTS / "fcn.yaml", overrides={"trainer.precision": "auto"})
    chosen = precision.resolve_precision("auto")[0]  # the experiment's accelerator is Lightning's auto
    assert parts.config["trainer"]["precision"] == chosen and parts.trainer.precision == chosen


@pytest.mark.parametrize("bf16, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_a_gpu_gets_bf16_only_where_it_computes_in_it(monkeypatch, bf16, expected):
    """A pre-Ampere GPU (V100, T4) emulates bf16: torch says bf16 is supported unless emulation is
    left out, and there fp32 is faster."""
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(precision.torch.cuda, "get_device_name", lambda index=0: "a GPU")
    monkeypatch.setattr(precision.torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation or bf16)
    assert precision.resolve_precision("gpu")[0] == expected
