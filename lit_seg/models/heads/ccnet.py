"""CCNet head (Huang et al., ICCV 2019): recurrent criss-cross attention."""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lit_seg.errors import ConfigError
from lit_seg.models.attention import CrissCrossAttention
from lit_seg.models.heads.base import ContextHead
from lit_seg.models.layers import Activation


class CCHead(ContextHead):
    """Conv in -> criss-cross attention applied ``recurrence`` times (shared weights) -> conv out
    -> concat with the input -> 3x3 fuse -> classifier (the paper's RCCA module).

    Args:
        recurrence: R, how many times the one attention block is applied. R=2 (the paper's
            choice) lets every position reach every other one.
        reduction: query/key channels are ``channels // reduction``.
        shared_weights: one block applied R times (the paper's RCCA); False: R blocks, each with
            its own weights and residual scale gamma (a documented option of the task suite, not
            the paper's network: it tells whether sharing one block across the steps is what makes
            R=2 hard to train).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        dropout: float = 0.1,
        in_index: int = -1,
        recurrence: int = 2,
        reduction: int = 8,
        activation: Activation = "relu",
        shared_weights: bool = True,
    ) -> None:
        if recurrence < 1:
            raise ConfigError(f"CCHead: recurrence must be >= 1, got {recurrence}")
        super().__init__(in_channels, num_classes, channels, dropout, in_index, activation,
                         lambda c: CrissCrossAttention(c, reduction=reduction))
        self.recurrence = recurrence
        self.shared_weights = shared_weights
        if not shared_weights:
            self.attention = nn.ModuleList([self.attention, *(CrissCrossAttention(channels, reduction=reduction)
                                                              for _ in range(recurrence - 1))])

    def step(self, r: int) -> CrissCrossAttention:
        """The block of recurrence step ``r`` (0-based): the one shared block, or the step's own."""
        return self.attention if self.shared_weights else self.attention[r]

    def attention_maps(self, x: Tensor, queries: Tensor) -> dict[str, Tensor]:
        """Criss-cross weights of the queries at every recurrence step, and their composition.

        ``x``: the head's input (B, ``in_channels``, h, w); ``queries``: (Q, 2) long (row, col)
        at that resolution. Returns (B, Q, h, w) maps:

        - ``step1`` ... ``stepR``: the query's criss-cross weights at step r, computed on that
          step's input (the output of steps 1..r-1). Zero off the query's row and column; each
          sums to 1.
        - ``composed``: attention rollout over the R steps, row p (the query) of
          ``A_R ... A_2 A_1``, where ``A_r`` is step r's N x N attention matrix. It is the weight
          with which the query's step-R context draws on each step-1 input position along
          attention paths. For R=1 it equals ``step1``; for R=2 every position is reachable
          (the query's column reaches every row, each of those rows every column), so it is
          non-zero everywhere. Each map sums to 1 (a product of row-stochastic matrices).

        The residual path (``gamma * context + x``) is left out of ``composed``. A step's output
        at p is ``gamma * sum_q A[p, q] W_v y_q + y_p``: the attention term and the identity are
        weighted by ``gamma * W_v`` (a learnt channel matrix) against ``I``, not by scalars, so
        no scalar mixing such as rollout's ``0.5 A + 0.5 I`` is faithful to the model, and it
        would hide the reach of the attention (R=1 vs R=2) that this map exists to show. With
        the identity in, the map would be a mix of ``A_R ... A_1`` and the shorter products
        (``A_2`` alone for R=2), which the ``step`` maps already show.

        Computed without N x N matrices: the query's step-R row (H + W - 1 non-zeros) is pushed
        back through ``A_{R-1}, ..., A_1``, each step costing O(Q (H + W) H W). Uses the
        current train/eval mode of the BatchNorm in ``conv_in`` (call it in eval mode).
        """
        y = self.conv_in(x)
        weights = []  # (column, row) of steps 1..R-1
        maps: dict[str, Tensor] = {}
        for step in range(1, self.recurrence + 1):
            block = self.step(step - 1)
            maps[f"step{step}"] = block.attention_map(y, queries)
            if step < self.recurrence:
                weights.append(block.attention(y))
                y = block(y)
        # composed = e_p^T A_R A_{R-1} ... A_1: start from the query's step-R row and multiply by
        # A_{R-1}, ..., A_1 on the right. (m A)[k, l] = sum_i m[i, l] column[i, l, k]
        # + sum_j m[k, j] row[k, j, l]: column[b, i, j, k] weights (k, j), row[b, i, j, k] (i, k).
        composed = maps[f"step{self.recurrence}"]
        for column, row in reversed(weights):
            composed = (torch.einsum("bqij,bijk->bqkj", composed, column)
                        + torch.einsum("bqij,bijk->bqik", composed, row))
        maps["composed"] = composed
        return maps

    def apply_block(self, y: Tensor) -> Tensor:
        for r in range(self.recurrence):  # one block, shared weights (unless shared_weights is False)
            y = self.step(r)(y)
        return y
