"""Global context block (Cao et al., "GCNet: Non-local Networks Meet Squeeze-Excitation
Networks and Beyond", ICCVW 2019, arXiv:1904.11492)."""

from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from lit_seg.errors import ConfigError
from lit_seg.models.attention.functional import autocast_inputs

GCPooling = Literal["att", "avg"]
GCFusion = Literal["add", "mul"]


def _bottleneck(channels: int, planes: int) -> nn.Sequential:
    """1x1 conv C -> planes, LayerNorm over (planes, 1, 1), ReLU, 1x1 conv planes -> C (zeroed)."""
    block = nn.Sequential(
        nn.Conv2d(channels, planes, 1),
        nn.LayerNorm([planes, 1, 1]),
        nn.ReLU(inplace=True),
        nn.Conv2d(planes, channels, 1),
    )
    nn.init.zeros_(block[-1].weight)
    nn.init.zeros_(block[-1].bias)
    return block


class GlobalContextBlock(nn.Module):
    """One context vector per image, transformed by a bottleneck and fused into every position.

    Input and output: (B, C, H, W). Pooling ``att``: a 1x1 conv to one channel, softmax over
    the H*W positions, and the weighted sum of x (the simplified non-local block); ``avg``:
    global average pooling. Fusion, any non-empty subset of ``add`` and ``mul``: with
    ``planes = max(int(C * ratio), 1)`` and bottleneck = conv1x1 -> LayerNorm -> ReLU -> conv1x1,
    ``mul`` multiplies x by ``sigmoid(channel_mul_conv(context))`` and then ``add`` adds
    ``channel_add_conv(context)``. The last conv of each bottleneck starts at zero: with
    ``add`` alone a fresh block is the identity; with ``mul`` it starts as ``x * sigmoid(0) =
    x / 2`` (as in the reference implementation).
    """

    def __init__(
        self,
        channels: int,
        *,
        ratio: float = 1 / 16,
        pooling: GCPooling = "att",
        fusion: Sequence[GCFusion] = ("add",),
    ) -> None:
        super().__init__()
        if pooling not in get_args(GCPooling):
            raise ConfigError(f"pooling must be one of {get_args(GCPooling)}, got {pooling!r}")
        fusion = tuple(fusion)
        if not fusion or len(set(fusion)) != len(fusion) or not set(fusion) <= set(get_args(GCFusion)):
            raise ConfigError(f"fusion must be a non-empty subset of {get_args(GCFusion)}, got {fusion!r}")
        self.pooling = pooling
        self.fusion = fusion
        self.planes = max(int(channels * ratio), 1)
        if pooling == "att":
            self.conv_mask = nn.Conv2d(channels, 1, 1)
            # As mmcv's ContextBlock.reset_parameters: Kaiming normal (fan_in), zero bias.
            nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.conv_mask.bias)
        self.channel_add_conv = _bottleneck(channels, self.planes) if "add" in fusion else None
        self.channel_mul_conv = _bottleneck(channels, self.planes) if "mul" in fusion else None

    def attention_map(self, x: Tensor, queries: Tensor | None = None) -> Tensor:
        """The pooling weights over the positions, (B, 1, H, W), summing to 1.

        The block has a single map shared by every query, so ``queries`` is ignored. With
        ``avg`` pooling it is uniform, 1 / (H * W).
        """
        batch, _, height, width = x.shape
        if self.pooling == "avg":
            return x.new_full((batch, 1, height, width), 1.0 / (height * width))
        return self.conv_mask(x).flatten(2).softmax(dim=-1).view(batch, 1, height, width)

    def spatial_pool(self, x: Tensor) -> Tensor:
        """The context vector: (B, C, 1, 1)."""
        if self.pooling == "avg":
            return x.mean(dim=(2, 3), keepdim=True)
        weight = self.conv_mask.weight.flatten()  # (C,)
        return _AttentionPool.apply(*autocast_inputs(x.flatten(2), weight, self.conv_mask.bias)).unsqueeze(-1)

    def forward(self, x: Tensor) -> Tensor:
        context = self.spatial_pool(x)
        out = x
        if self.channel_mul_conv is not None:
            out = out * torch.sigmoid(self.channel_mul_conv(context))
        if self.channel_add_conv is not None:
            out = out + self.channel_add_conv(context)
        return out


class _AttentionPool(torch.autograd.Function):
    """``sum_n softmax_n(w . x_n + b) x_n``: x (B, C, N), w (C,), b (1,) or None -> (B, C, 1).

    The same as ``conv_mask`` -> softmax -> weighted sum through autograd, with fewer passes
    over x in the backward: its gradient ``g_ctx p^T + w g_logits^T`` is one rank-2 product
    written once (autograd writes the two outer products separately and adds them).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        # (B, N); an explicit bmm: torch.matmul(weight, x) copies x (1-D @ 3-D folding)
        logits = torch.bmm(weight.view(1, 1, -1).expand(x.shape[0], -1, -1), x).squeeze(1)
        if bias is not None:
            logits = logits + bias
        p = logits.softmax(dim=-1)
        ctx.save_for_backward(x, weight, p)
        ctx.has_bias = bias is not None
        return torch.bmm(x, p.unsqueeze(-1))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight, p = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        grad_p = torch.bmm(grad.transpose(1, 2), x).squeeze(1)  # (B, N)
        grad_logits = p * (grad_p - (grad_p * p).sum(dim=-1, keepdim=True))
        grad_x = grad_w = grad_b = None
        if need_x:
            left = torch.cat([grad, weight.view(1, -1, 1).expand(x.shape[0], -1, -1)], dim=2)  # (B, C, 2)
            grad_x = torch.bmm(left, torch.stack([p, grad_logits], dim=1))  # (B, C, N)
        if need_w:
            grad_w = torch.bmm(x, grad_logits.unsqueeze(-1)).sum(dim=0).squeeze(-1)
        if ctx.has_bias and need_b:
            grad_b = grad_logits.sum().reshape(1)
        return grad_x, grad_w, grad_b
