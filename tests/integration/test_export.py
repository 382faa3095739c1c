"""Export (lit_seg.inference.export): every experiment's model as ONNX (run with onnxruntime) and TorchScript
gives PyTorch's logits to 1e-4 at two image sizes. The cases are the experiment YAMLs, so a new
head's experiment gets the test for free."""

import functools
import importlib

import numpy as np
import pytest
import torch

from lit_seg.api.config import merged_config
from lit_seg.inference.export import FORMATS, export
from lit_seg.train.module import SegmentationModule
from tests.conftest import EXPERIMENTS

SIZES = [(64, 64), (40, 88)]  # the second is not the traced size, nor square
# Experiments whose model cannot be exported with dynamic height and width, and why (docs/using-a-model.md,
# "Exporting").
CANNOT_EXPORT: dict[str, dict[str, str]] = {
    "psp": {"onnx": "the ONNX exporter supports adaptive_avg_pool2d only for a known input size"},
    "ann": {"onnx": "the ONNX exporter supports adaptive_avg_pool2d (its pyramid-pooled keys) only for a known "
                    "input size"},
    "oc_pyramid": {"onnx": "region pooling builds index tensors in Python from the traced size",
                   "torchscript": "region pooling builds index tensors in Python from the traced size"},
}


def cases() -> list:
    out = []
    for path in sorted(EXPERIMENTS.glob("*.yaml")):
        if path.stem == "base":
            continue
        model = merged_config(path).get("model") or {}
        head = model.get("head") or {}
        out.append(pytest.param(path.stem, head, model.get("encoder_gc_stages") or (), id=path.stem))
    return out


def build(head: dict, gc_stages) -> SegmentationModule:
    module_name, cls_name = head["class_path"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), cls_name)
    init_args = dict(head.get("init_args") or {})
    init_args["channels"] = 16  # small and quick; the graph is the same
    factory = functools.partial(cls, **init_args)
    module = SegmentationModule(head=factory, num_classes=5, encoder_name="resnet18", encoder_depth=3,
                                aux_weight=0.0, encoder_gc_stages=gc_stages).eval()
    torch.manual_seed(0)
    with torch.no_grad():  # zero-initialised scales (DANet gamma, non-local W, ...) would hide the attention
        for p in module.parameters():
            if not p.any():
                p.normal_(0.0, 0.5)
    return module


@pytest.mark.parametrize("name, head, gc_stages", cases())
def test_onnx_and_torchscript_match_pytorch_at_two_sizes(name, head, gc_stages, tmp_path):
    import onnxruntime

    from lit_seg.errors import ConfigError

    module = build(head, gc_stages)
    for fmt in FORMATS:
        path = tmp_path / f"model{FORMATS[fmt]}"
        if fmt in CANNOT_EXPORT.get(name, {}):
            # export() refuses in one line instead of writing a model that is wrong at other sizes.
            with pytest.raises(ConfigError, match="cannot be exported|other logits than PyTorch"):
                export(module, path, fmt)
            assert not path.exists() or fmt == "onnx" and "cannot" in CANNOT_EXPORT[name][fmt]
            continue
        export(module, path, fmt, verify=False)  # checked here, independently of export's own check
        if fmt == "onnx":
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        else:
            scripted = torch.jit.load(str(path))
        for size in SIZES:
            images = torch.randn(2, 3, *size)
            with torch.no_grad():
                expected = module(images).numpy()
                got = (session.run(["logits"], {"images": images.numpy()})[0] if fmt == "onnx"
                       else scripted(images).numpy())
            assert got.shape == (2, 5, *size)
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=f"{fmt} {name} {size}")


def test_export_command_writes_into_the_run_folder(ccnet_run):
    from lit_seg.cli import main

    for fmt in FORMATS:
        with pytest.raises(SystemExit) as done:  # `lit-seg export`, through the command's dispatch
            main(["export", "--ckpt_path", str(ccnet_run), "--format", fmt])
        assert done.value.code == 0
        assert (ccnet_run / "export" / f"model{FORMATS[fmt]}").is_file()
