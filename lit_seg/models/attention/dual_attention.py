"""DANet's position and channel attention (Fu et al., "Dual Attention Network for Scene
Segmentation", CVPR 2019, arXiv:1809.02983)."""

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from lit_seg.models.attention.functional import autocast_inputs, query_positions, softmax_attention


class PositionAttention(nn.Module):
    """Position attention module (PAM): every position attends to all positions.

    Input and output: (B, C, H, W). Query and key are 1x1 convs to ``max(C // reduction, 1)``
    channels, the value a 1x1 conv keeping C; ``S = softmax_j(q_i . k_j)`` (no scaling) and the
    output is ``alpha * sum_j S_ij v_j + x`` with ``alpha`` initialised to 0 (identity at start).
    """

    def __init__(self, channels: int, *, reduction: int = 8) -> None:
        super().__init__()
        key_channels = max(channels // reduction, 1)
        self.query = nn.Conv2d(channels, key_channels, 1)
        self.key = nn.Conv2d(channels, key_channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        query, key, value = self.query(x).flatten(2), self.key(x).flatten(2), self.value(x).flatten(2)
        context = softmax_attention(query, key, value, 1.0).unflatten(2, x.shape[-2:])
        return torch.addcmul(x, self.alpha, context)  # alpha * context + x, one temporary less

    def attention_map(self, x: Tensor, queries: Tensor) -> Tensor:
        """Rows of S for the query pixels: (B, Q, H, W), each summing to 1.

        ``queries``: (Q, 2) integer (row, col) in x's resolution.
        """
        height, width = x.shape[-2:]
        rows, cols = query_positions(queries, x)
        index = rows * width + cols
        query = self.query(x.flatten(2)[:, :, index].unsqueeze(-1)).flatten(2)  # (B, C', Q)
        energy = query.transpose(1, 2) @ self.key(x).flatten(2)
        return energy.softmax(dim=-1).unflatten(-1, (height, width))


class ChannelAttention(nn.Module):
    """Channel attention module (CAM): every channel map attends to all channel maps.

    Input and output: (B, C, H, W); no convolutions. With A the input as (B, C, N), the
    affinity is ``X = softmax(rowmax(A A^T) - A A^T)`` (C x C) and the output is
    ``beta * X A + x`` with ``beta`` initialised to 0 (identity at start).
    """

    def __init__(self) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.zeros(1))

    def channel_affinity(self, x: Tensor) -> Tensor:
        """The (B, C, C) channel affinity X; rows sum to 1."""
        features = x.flatten(2)
        energy = torch.bmm(features, features.transpose(1, 2))
        # The reference code's form, kept as the released models were trained with it. Softmax
        # ignores a per-row constant, so this is exactly softmax(-energy): it puts weight on the
        # most DISsimilar channels (smallest A_i . A_j), not on similar ones as the paper's
        # softmax(energy) would. The row max only shifts the logits (to >= 0); it adds no
        # stability beyond what torch.softmax already does (it subtracts its own row max).
        return torch.softmax(energy.amax(dim=-1, keepdim=True) - energy, dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        # In float32 under autocast: the energies A A^T are sums over all N positions (of order
        # N), and bf16's 8-bit mantissa would leave errors far above the softmax's scale.
        return _ChannelAttentionResidual.apply(*autocast_inputs(x, self.beta, dtype=torch.float32))


class _ChannelAttentionResidual(torch.autograd.Function):
    """``x + beta * X A`` with ``X = softmax(rowmax(A A^T) - A A^T)``, A = x as (B, C, N).

    The forward is autograd's; the backward needs three (B, C, N)-sized products where autograd
    runs four: with ``S = dL/dy A^T`` (C x C), ``dL/dbeta = sum(X * S)`` (no saved context),
    the affinity's gradient ``G = -softmax'(beta S)`` enters through both factors of ``A A^T``
    as one product ``(G + G^T) A``, and that and ``beta X^T dL/dy`` accumulate onto dL/dy in
    place (about 15% less work and fewer (B, C, N) passes than autograd's graph).
    """

    @staticmethod
    def forward(ctx, x: Tensor, beta: Tensor) -> Tensor:
        features = x.flatten(2)
        energy = torch.bmm(features, features.transpose(1, 2))
        affinity = torch.softmax(energy.amax(dim=-1, keepdim=True) - energy, dim=-1)
        del energy
        context = torch.bmm(affinity, features).view_as(x)
        ctx.save_for_backward(x, beta, affinity)
        return torch.addcmul(x, beta, context)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, beta, affinity = ctx.saved_tensors
        features, grad_flat = x.flatten(2), grad.reshape(x.shape[0], x.shape[1], -1)
        s = torch.bmm(grad_flat, features.transpose(1, 2))  # (B, C, C): dL/d(context) A^T / beta
        grad_beta = (affinity * s).sum().reshape(beta.shape) if ctx.needs_input_grad[1] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            d_affinity = s.mul_(beta)
            # softmax backward; the row max has no gradient (softmax ignores row shifts)
            g = affinity * (d_affinity - (d_affinity * affinity).sum(dim=-1, keepdim=True))
            g = g + g.transpose(1, 2)  # -(dL/d energy) through both factors of A A^T
            # dL/dA = grad + beta X^T grad - (G + G^T) A
            grad_x = torch.baddbmm(grad_flat, (affinity * beta).transpose(1, 2), grad_flat)
            grad_x.baddbmm_(g, features, alpha=-1)
            grad_x = grad_x.view(x.shape)
        return grad_x, grad_beta

