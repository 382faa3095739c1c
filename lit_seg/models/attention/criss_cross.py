"""Criss-cross attention (CCNet, Huang et al., ICCV 2019, arXiv:1811.11721)."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_seg.models.attention.functional import query_positions


class CrissCrossAttention(nn.Module):
    """Each position attends to the H + W - 1 positions of its own row and column.

    Input and output: (B, C, H, W). Query and key are 1x1 projections to ``C // reduction``
    channels, the value keeps C. The output is ``gamma * context + x`` with ``gamma``
    initialised to 0, so a fresh block is the identity. Applying the same block twice
    (recurrence R = 2, shared weights) connects every pair of positions.

    The centre position appears in both its row and its column; as in the paper's code its
    column term is masked with -inf so it is counted once.
    """

    def __init__(self, in_channels: int, reduction: int = 8) -> None:
        super().__init__()
        key_channels = max(in_channels // reduction, 1)
        self.query = nn.Conv2d(in_channels, key_channels, 1)
        self.key = nn.Conv2d(in_channels, key_channels, 1)
        self.value = nn.Conv2d(in_channels, in_channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Attention weights of every position: column part (B, H, W, H), row part (B, H, W, W).

        ``column[b, i, j, k]`` weights position (k, j); ``row[b, i, j, k]`` weights (i, k); the
        two sum to 1 over their last dimensions together.
        """
        q, k = self.query(x), self.key(x)
        height = x.shape[-2]
        energy_column = torch.einsum("bcij,bckj->bijk", q, k)
        energy_row = torch.einsum("bcij,bcik->bijk", q, k)
        self_in_column = torch.eye(height, dtype=torch.bool, device=x.device)[:, None, :]
        energy_column = energy_column.masked_fill(self_in_column, float("-inf"))
        weights = torch.cat([energy_column, energy_row], dim=-1).softmax(dim=-1)
        return weights[..., :height], weights[..., height:]

    def attention_map(self, x: Tensor, queries: Tensor) -> Tensor:
        """Weights of the query pixels over the whole map: (B, Q, H, W), zero off the criss-cross.

        ``queries``: (Q, 2) integer (row, col) in x's resolution. Each map holds the query's
        column and row weights in place and sums to 1.
        """
        height, width = x.shape[-2:]
        rows, cols = query_positions(queries, x)
        column, row = self.attention(x)
        in_column = F.one_hot(cols, width).to(x.dtype)[None, :, None, :]  # (1, Q, 1, W)
        in_row = F.one_hot(rows, height).to(x.dtype)[None, :, :, None]  # (1, Q, H, 1)
        return column[:, rows, cols, :, None] * in_column + row[:, rows, cols, None, :] * in_row

    def forward(self, x: Tensor) -> Tensor:
        column, row = self.attention(x)
        v = self.value(x)
        context = torch.einsum("bijk,bckj->bcij", column, v) + torch.einsum("bijk,bcik->bcij", row, v)
        return self.gamma * context + x
