"""``lit-seg export <run folder or .ckpt> --format onnx|torchscript``: the model for deployment.

The exported graph is :meth:`SegmentationModule.forward` in eval mode: normalised images
(B, 3, H, W) float32 -> logits (B, num_classes, H, W) at the input size (argmax them for the
mask); whole-image inference, no test-time augmentation. ONNX is written with the TorchScript-
based exporter (``dynamo=False``: it needs no ``onnxscript``) and dynamic batch, height and width;
TorchScript with ``torch.jit.trace``, whose recorded shape arithmetic also follows the input size.
Normalise inputs as training does: ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)
on RGB in [0, 1].
"""

import argparse
import contextlib
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from lit_seg.errors import ConfigError
from lit_seg.train.checkpoints import load_module

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


class _Logits(nn.Module):
    """The module's whole-image logits, channels-first, as a plain ``nn.Module`` to trace."""

    def __init__(self, module) -> None:
        super().__init__()
        self.model = module.model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)["out"]


class _Ctx:
    """Stands in for an autograd context: forward-only, nothing to save."""

    needs_input_grad = ()

    def save_for_backward(self, *tensors) -> None:
        pass

    def mark_non_differentiable(self, *tensors) -> None:
        pass

    def set_materialize_grads(self, value: bool) -> None:
        pass


def _criss_cross_residual(x, gamma, weights, value):
    """``_CrissCrossResidual``'s forward as its docstring's einsum form: its own writes into views
    (``out=``) and per-image loop are not recorded by a tracer."""
    height = value.shape[2]
    column, row = weights[..., :height], weights[..., height:]
    context = torch.einsum("bijk,bckj->bcij", column, value) + torch.einsum("bijk,bcik->bcij", row, value)
    return x + gamma * context


def _softmax_attention(q, k, v, scale, rows):
    """``_ChunkedSoftmaxAttention``'s forward in one block (its chunk loop writes into views)."""
    weights = torch.bmm(q.transpose(1, 2) * scale, k).softmax(dim=-1)  # (B, N, M)
    return torch.bmm(v, weights.transpose(1, 2))


# Trace-friendly forwards for the Functions whose own forward is not; the others (plain ops) run as they are.
_TRACEABLE = {"_CrissCrossResidual": _criss_cross_residual, "_ChunkedSoftmaxAttention": _softmax_attention}


@contextlib.contextmanager
def inline_autograd_functions():
    """lit-seg's custom ``torch.autograd.Function`` s (memory-lean attention backwards) run as plain
    torch ops: a tracer cannot record a Python Function call, and export needs no backward. Each
    runs its own ``forward``, or its equivalent from ``_TRACEABLE`` where that one writes into
    views (the export tests compare the outputs at two sizes)."""
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    eye = torch.eye

    def float_eye(*args, dtype=None, **kwargs):
        # A bool eye (CCNet's -inf diagonal) becomes ONNX EyeLike(bool), which onnxruntime lacks.
        if dtype is torch.bool:
            return eye(*args, **kwargs) > 0
        return eye(*args, dtype=dtype, **kwargs)

    torch.eye = float_eye
    patched = [cls for cls in subclasses(torch.autograd.Function) if cls.__module__.startswith("lit_seg.")
               and "apply" not in vars(cls)]
    for cls in patched:
        if cls.__name__ in _TRACEABLE:
            cls.apply = staticmethod(_TRACEABLE[cls.__name__])
        else:
            cls.apply = classmethod(lambda c, *args: c.forward(_Ctx(), *args))
    try:
        yield
    finally:
        torch.eye = eye
        for cls in patched:
            del cls.apply


def load_for_export(path: str | Path):
    """A run folder (its best checkpoint) or a ``.ckpt`` -> the SegmentationModule in eval mode, on the
    CPU, in NCHW (what ONNX runtimes expect)."""
    module = load_module(path)
    module.model.to(memory_format=torch.contiguous_format)
    return module


def export(module, path: str | Path, format: str = "onnx", example_size: tuple[int, int] = (64, 64),
           opset: int = 17, verify: bool = True) -> Path:
    """Writes ``module`` (a SegmentationModule) to ``path`` as ONNX or TorchScript; returns the path.

    With ``verify``, the exported model is run (onnxruntime for ONNX) at the example size and at
    a second one and compared with PyTorch (1e-4): a head whose graph bakes in the traced size
    (e.g. Python loops over regions) raises a ConfigError instead of writing a wrong model.
    """

    if format not in FORMATS:
        raise ConfigError(f"export: format must be one of {', '.join(FORMATS)}, got {format!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = _Logits(module).eval()
    example = torch.zeros(1, 3, *example_size)
    head = type(module.model.head).__name__
    with torch.no_grad(), warnings.catch_warnings(), inline_autograd_functions():
        # The tracer warns about every shape it turns into a Python int; `verify` shows whether any matters.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            if format == "onnx":
                torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=opset,
                                  input_names=["images"], output_names=["logits"],
                                  dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                                                "logits": {0: "batch", 2: "height", 3: "width"}})
            else:
                torch.jit.trace(net, example, check_trace=False).save(str(path))
        except (RuntimeError, torch.onnx.errors.OnnxExporterError) as err:
            reason = " ".join(str(err).split())[:200]
            raise ConfigError(f"{head} cannot be exported to {format} with dynamic height and width ({reason}); "
                              f"see the README's export table, or try --format torchscript") from None
    if verify:
        run = _runner(path, format)
        for size in (example_size, (example_size[0] + 8, example_size[1] + 24)):
            images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                expected = net(images)
            try:
                got = run(images)
            except Exception:  # noqa: BLE001 - e.g. onnxruntime: a Reshape to the traced size fails
                got = None
            if got is None or got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-4):
                path.unlink(missing_ok=True)
                raise ConfigError(f"{head} exported to {format} gives other logits than PyTorch at {size[0]}x{size[1]} "
                                  f"(its graph depends on the traced input size, e.g. Python loops over regions): "
                                  f"not written; deploy it with PyTorch (lit_seg.load)")
    return path


def _runner(path: Path, format: str):
    """The exported file as a function images -> logits (onnxruntime for ONNX)."""
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda images: torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])
    scripted = torch.jit.load(str(path))

    def run(images):
        with torch.no_grad():
            return scripted(images)

    return run


def main(argv: Sequence[str]) -> None:
    """The ``lit-seg export`` command."""
    parser = argparse.ArgumentParser(prog="lit-seg export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True,
                        help="the trained model: a run folder (its best checkpoint) or a .ckpt")
    parser.add_argument("--format", choices=list(FORMATS), default="onnx")
    parser.add_argument("--output_dir", type=Path, default=None,
                        help="folder of the exported model.onnx / model.pt (default: <run folder>/export, or the "
                             ".ckpt's folder)")
    parser.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"),
                        help="example input size for tracing (the exported model takes any size)")
    args = parser.parse_args(list(argv))
    run = Path(args.ckpt_path)
    folder = args.output_dir or (run / "export" if run.is_dir() else run.parent)
    output = folder / f"{'model' if run.is_dir() else run.stem}{FORMATS[args.format]}"
    written = export(load_for_export(run), output, args.format, tuple(args.size))
    print(f"lit-seg: wrote {written} ({args.format}; input 'images' (B, 3, H, W) normalised RGB, output 'logits' "
          f"(B, classes, H, W))", file=sys.stderr)
