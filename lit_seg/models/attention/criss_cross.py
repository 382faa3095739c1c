"""Criss-cross attention (CCNet, Huang et al., ICCV 2019, arXiv:1811.11721)."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from lit_seg.models.attention.functional import autocast_inputs, query_positions


class CrissCrossAttention(nn.Module):
    """Each position attends to the H + W - 1 positions of its own row and column.

    Input and output: (B, C, H, W). Query and key are 1x1 projections to ``C // reduction``
    channels, the value keeps C. The output is ``gamma * context + x`` with ``gamma``
    initialised to 0, so a fresh block is the identity. Applying the same block twice
    (recurrence R = 2, shared weights) connects every pair of positions.

    The centre position appears in both its row and its column; as in the paper's code its
    column term is masked with -inf so it is counted once.
    """

    def __init__(self, channels: int, *, reduction: int = 8) -> None:
        super().__init__()
        key_channels = max(channels // reduction, 1)
        self.query = nn.Conv2d(channels, key_channels, 1)
        self.key = nn.Conv2d(channels, key_channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def _weights(self, x: Tensor) -> Tensor:
        """Softmax weights of every position over its column, then its row: (B, H, W, H + W)."""
        return self._weights_of(self.query(x), self.key(x))

    @staticmethod
    def _weights_of(q: Tensor, k: Tensor) -> Tensor:
        height = q.shape[-2]
        energy_column = torch.einsum("bcij,bckj->bijk", q, k)
        energy_row = torch.einsum("bcij,bcik->bijk", q, k)
        self_in_column = torch.eye(height, dtype=torch.bool, device=q.device)[:, None, :]
        energy_column = energy_column.masked_fill(self_in_column, float("-inf"))
        return torch.cat([energy_column, energy_row], dim=-1).softmax(dim=-1)

    def attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Attention weights of every position: column part (B, H, W, H), row part (B, H, W, W).

        ``column[b, i, j, k]`` weights position (k, j); ``row[b, i, j, k]`` weights (i, k); the
        two sum to 1 over their last dimensions together.
        """
        weights = self._weights(x)
        height = x.shape[-2]
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
        q, k, value = self.query(x), self.key(x), self.value(x)
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # The attention itself in float32: the CPU's bf16 einsum and batched products on the
            # criss-cross layouts take slow paths (the CCNet heads' step 3-5x their float32 time,
            # measured at the reach task's size); the projections above stay in bf16.
            with torch.autocast("cpu", enabled=False):
                return criss_cross_residual(x.float(), self.gamma, self._weights_of(q.float(), k.float()),
                                            value.float())
        return criss_cross_residual(x, self.gamma, self._weights_of(q, k), value)


def criss_cross_residual(x: Tensor, gamma: Tensor, weights: Tensor, value: Tensor) -> Tensor:
    """``x + gamma * context`` with ``context[b, c, i, j] = sum_k column[b, i, j, k] v[b, c, k, j]
    + sum_k row[b, i, j, k] v[b, c, i, k]``; weights (B, H, W, H + W) (column, then row), value (B, C, H, W).

    The same as ``gamma * (einsum("bijk,bckj->bcij", column, v) + einsum("bijk,bcik->bcij", row, v)) + x``,
    written for the CPU's memory traffic (see ``_CrissCrossResidual``).
    """
    return _CrissCrossResidual.apply(*autocast_inputs(x, gamma, weights, value))


class _CrissCrossResidual(torch.autograd.Function):
    """Criss-cross aggregation plus the residual, with hand-written layouts.

    The einsum (and the seed's bmm) form spends most of its time outside the matrix products:
    permuted copies of v and of the context, and adds of tensors in different layouts, each a
    strided pass over a (B, C, H, W) tensor. Here every product is a batched matrix product on
    strided views of NCHW tensors (one batch element at a time: batch (row) and column index
    then have one stride each), written with ``out=`` straight into its place:

    - row part, batch over rows i: ``v[b, :, i, :] (C x W) @ row[b, i]^T`` lands in the NCHW context;
    - column part, batch over columns j: the same on v with H and W swapped (one cheap copy, the
      swap stays within each 2-D map), landing in an H/W-swapped buffer added back once;
    - the backward recomputes nothing but that copy: the weight gradient is ``gamma * S`` with
      ``S = dL/dy . v`` per criss-cross pair, ``dL/dgamma = sum(S * weights)``, and the value
      gradient is the transposed aggregation, built the same way.

    Memory: besides its inputs, the forward keeps nothing (the context is not saved); at C=512,
    64x64 it is about 1.4x faster than the einsum form in forward + backward.
    """

    @staticmethod
    def forward(ctx, x: Tensor, gamma: Tensor, weights: Tensor, value: Tensor) -> Tensor:
        batch, channels, height, width = value.shape
        column, row = weights[..., :height], weights[..., height:]
        context = value.new_empty(batch, channels, height, width)
        context_t = value.new_empty(batch, channels, width, height)  # [b, c, j, i]
        value_t = value.transpose(2, 3).contiguous()  # [b, c, j, k]
        for b in range(batch):
            # rows: [i, c, k] @ [i, k, j] -> [i, c, j]
            torch.bmm(value[b].transpose(0, 1), row[b].transpose(1, 2), out=context[b].transpose(0, 1))
            # columns: [j, c, k] @ [j, k, i] -> [j, c, i]
            torch.bmm(value_t[b].transpose(0, 1), column[b].permute(1, 2, 0), out=context_t[b].transpose(0, 1))
        del value_t
        context.add_(context_t.transpose(2, 3))
        del context_t
        ctx.save_for_backward(gamma, weights, value)
        return torch.addcmul(x, gamma, context)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor):
        gamma, weights, value = ctx.saved_tensors
        batch, channels, height, width = value.shape
        column, row = weights[..., :height], weights[..., height:]
        need_gamma, need_weights, need_value = ctx.needs_input_grad[1:]
        grad_y = grad_y.contiguous()
        grad_t = grad_y.transpose(2, 3).contiguous()  # [b, c, j, i]
        grad_gamma = grad_weights = grad_value = None
        if need_gamma or need_weights:
            value_t = value.transpose(2, 3).contiguous()  # [b, c, j, k]
            s = torch.empty_like(weights)  # dL/dweights / gamma
            s_column_t = s[..., :height].transpose(1, 2)  # [b, j, i, k]
            for b in range(batch):
                # rows: [i, j, c] @ [i, c, k] -> [i, j, k]
                torch.bmm(grad_y[b].permute(1, 2, 0), value[b].transpose(0, 1), out=s[b, :, :, height:])
                # columns: [j, i, c] @ [j, c, k] -> [j, i, k]
                torch.bmm(grad_t[b].permute(1, 2, 0), value_t[b].transpose(0, 1), out=s_column_t[b])
            del value_t
            if need_gamma:
                grad_gamma = (s * weights).sum().reshape(gamma.shape)
            if need_weights:
                grad_weights = s.mul_(gamma)
        if need_value:
            grad_value = torch.empty_like(value)
            grad_value_t = value.new_empty(batch, channels, width, height)  # [b, c, j, k]
            for b in range(batch):
                # rows: [i, c, j] @ [i, j, k] -> [i, c, k]
                torch.bmm(grad_y[b].transpose(0, 1), row[b], out=grad_value[b].transpose(0, 1))
                # columns: [j, c, i] @ [j, i, k] -> [j, c, k]
                torch.bmm(grad_t[b].transpose(0, 1), column[b].transpose(0, 1), out=grad_value_t[b].transpose(0, 1))
            grad_value.add_(grad_value_t.transpose(2, 3)).mul_(gamma)
        return grad_y, grad_gamma, grad_weights, grad_value
