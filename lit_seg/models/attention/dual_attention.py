"""DANet's position and channel attention (Fu et al., "Dual Attention Network for Scene
Segmentation", CVPR 2019, arXiv:1809.02983)."""

import torch
from torch import Tensor, nn

from lit_seg.models.attention.functional import query_positions, softmax_attention


class PositionAttention(nn.Module):
    """Position attention module (PAM): every position attends to all positions.

    Input and output: (B, C, H, W). Query and key are 1x1 convs to ``max(C // reduction, 1)``
    channels, the value a 1x1 conv keeping C; ``S = softmax_j(q_i . k_j)`` (no scaling) and the
    output is ``alpha * sum_j S_ij v_j + x`` with ``alpha`` initialised to 0 (identity at start).
    """

    def __init__(self, in_channels: int, reduction: int = 8) -> None:
        super().__init__()
        key_channels = max(in_channels // reduction, 1)
        self.query = nn.Conv2d(in_channels, key_channels, 1)
        self.key = nn.Conv2d(in_channels, key_channels, 1)
        self.value = nn.Conv2d(in_channels, in_channels, 1)
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
        context = torch.bmm(self.channel_affinity(x), x.flatten(2)).view_as(x)
        return self.beta * context + x
