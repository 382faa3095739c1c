"""Plain references written from the seeds' formulas: one position at a time, no tricks.

They are slow and obviously right; the operators in lit_seg are tested against them.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def conv1x1(x: Tensor, conv: torch.nn.Conv2d) -> Tensor:
    return F.conv2d(x, conv.weight, conv.bias)


def criss_cross_attention(x: Tensor, query, key, value, gamma: Tensor) -> Tensor:
    """Seed 003: position (i, j) attends to column j (without itself) and row i (with itself)."""
    q, k, v = conv1x1(x, query), conv1x1(x, key), conv1x1(x, value)
    batch, _, height, width = x.shape
    outputs = []
    for b in range(batch):
        columns = []
        for i in range(height):
            for j in range(width):
                positions = [(r, j) for r in range(height) if r != i] + [(i, c) for c in range(width)]
                keys = torch.stack([k[b, :, r, c] for r, c in positions], dim=1)          # (C', H+W-1)
                values = torch.stack([v[b, :, r, c] for r, c in positions], dim=1)        # (C, H+W-1)
                weights = torch.softmax(q[b, :, i, j] @ keys, dim=0)
                columns.append(values @ weights)
        outputs.append(torch.stack(columns, dim=1).reshape(v.shape[1], height, width))
    return gamma * torch.stack(outputs) + x
