"""Which input pixels can a model's prediction depend on? Exact receptive fields from input gradients.

A pixel's logits are a function of the input pixels inside its receptive field only; outside it
their input gradient is exactly zero whatever the weights (no path through the network). So the
support of the gradient, taken with random weights and every zero-initialised attention scale
set to 0.1 (a zero scale would cut the attention path), is the theoretical receptive field, and
a zero gradient on a cue proves that a model *cannot* see it, by construction. The built-in
tasks are checked with this (``tests/unit/test_tasks.py``); ``lit-seg receptive-field`` reports
the extents for an experiment, and the effective field of a trained model (where the gradient
is large) beside it.

    lit-seg receptive-field experiments/fcn.yaml
    lit-seg receptive-field experiments/fcn.yaml --ckpt runs/fcn/<run>/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lit_seg.errors import ConfigError
from lit_seg.study.harness import experiment_head, nonzero_scales
from lit_seg.train.checkpoints import read_checkpoint, run_checkpoint


def open_attention_paths(model: nn.Module) -> nn.Module:
    """Every all-zero parameter (the zero-initialised attention scales ``gamma``/``alpha``/``beta``,
    the BatchNorm after non-local's W) set to 0.1, in place, so that no path is cut by a zero."""
    return nonzero_scales(model)


def input_gradient(model: nn.Module, images: Tensor, weights: Tensor) -> Tensor:
    """|d (sum of weights * logits) / d images| summed over channels: (B, H, W).

    ``weights`` (B, K, H, W) picks the output pixels and classes (e.g. a random projection on
    the object pixels, zero elsewhere). The model runs in eval mode (BatchNorm per sample), so
    samples of a batch do not mix.
    """
    was_training = model.training
    model.eval()
    try:
        images = images.detach().clone().requires_grad_(True)
        logits = model(images)["out"]
        (grad,) = torch.autograd.grad((logits * weights).sum(), images)
    finally:
        model.train(was_training)
    return grad.abs().sum(1)


def extents(model: nn.Module, image_size: Sequence[int], dtype: torch.dtype = torch.float64) -> dict[str, int]:
    """The exact receptive field of an output pixel near the image centre, as offsets in pixels:
    ``{"up", "down", "left", "right"}`` (how far above / below / left / right of the pixel the
    input it depends on reaches), the largest over the 8 x 8 positions of a stride-8 cell."""
    h, w = image_size
    images = torch.randn(1, 3, h, w, dtype=dtype)
    out = {"up": 0, "down": 0, "left": 0, "right": 0}
    model = copy.deepcopy(model).to(dtype).eval()  # the caller's model keeps its dtype
    with torch.no_grad():
        k = model(images)["out"].shape[1]
    for dy in range(8):
        for dx in range(8):
            py, px = h // 2 - 4 + dy, w // 2 - 4 + dx
            weights = torch.zeros(1, k, h, w, dtype=dtype)
            weights[0, :, py, px] = 1.0
            support = input_gradient(model, images, weights)[0] > 0
            rows, cols = support.any(1).nonzero().flatten(), support.any(0).nonzero().flatten()
            out["up"] = max(out["up"], py - int(rows.min()))
            out["down"] = max(out["down"], int(rows.max()) - py)
            out["left"] = max(out["left"], px - int(cols.min()))
            out["right"] = max(out["right"], int(cols.max()) - px)
    return out


def effective_half_width(model: nn.Module, image_size: Sequence[int], mass: float = 0.95, images: int = 8) -> int:
    """The effective receptive field (Luo et al., NeurIPS 2016): the half-width in pixels of the
    smallest square around an output pixel at the image centre that holds ``mass`` of the input
    gradient's magnitude, on random N(0, 1) images, with the model's own weights."""
    h, w = image_size
    py, px = h // 2, w // 2
    x = torch.randn(images, 3, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        k = model.eval()(x[:1])["out"].shape[1]
    weights = torch.zeros(images, k, h, w)
    weights[:, :, py, px] = 1.0
    grad = input_gradient(model, x, weights).sum(0)
    total = float(grad.sum())
    for r in range(max(h, w)):
        if float(grad[max(0, py - r):py + r + 1, max(0, px - r):px + r + 1].sum()) >= mass * total:
            return r
    return max(h, w)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lit-seg receptive-field", description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s CONFIG [--ckpt_path RUN_OR_CKPT] [-- FIT_ARGS...]")
    parser.add_argument("config", help="an experiment YAML (experiments/fcn.yaml)")
    parser.add_argument("--ckpt_path", help="a trained model of that experiment (its run folder or a .ckpt): also "
                                            "report its effective field")
    argv = list(argv or [])
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)

    # The checkpoint is read first: a bad path fails at once, not after the exact field's 64 passes.
    path = run_checkpoint(args.ckpt_path) if args.ckpt_path else None
    state = read_checkpoint(path)["state_dict"] if path else None
    torch.manual_seed(0)
    _, _, model, size = experiment_head(args.config, overrides, batch=1)
    field = extents(open_attention_paths(copy.deepcopy(model)), size)
    print(f"{args.config} at {size[0]}x{size[1]}: an output pixel depends on input pixels up to "
          f"{field['up']} px above, {field['down']} below, {field['left']} left and {field['right']} right of it "
          f"(exact: the support of its input gradient)")
    if state is not None:
        try:
            model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
        except RuntimeError as err:
            raise ConfigError(f"checkpoint {path} is not a model of {args.config} ({str(err).splitlines()[0]}); pass "
                              f"the experiment that wrote it") from None
        r = effective_half_width(model, size)
        print(f"{path}: effective field (95% of the input gradient on random images): +-{r} px")
    return 0
