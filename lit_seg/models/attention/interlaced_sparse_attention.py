"""Interlaced sparse self-attention (Huang, Yuan, Guo, Zhang, Chen, Wang, "Interlaced Sparse
Self-Attention for Semantic Segmentation", IJCV 2021, arXiv:1907.12273)."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_seg.errors import ConfigError
from lit_seg.models.attention.functional import query_positions, softmax_attention
from lit_seg.models.layers import Activation, ConvNormAct


class GroupedSelfAttention(nn.Module):
    """Dense self-attention within each map of a batch: (B', C, h, w) -> (B', C, h, w), no residual.

    ISA batches each of its groups of positions as one map. Query and key: two 1x1
    conv-BN-``activation`` layers each, C -> d -> d (d = ``key_channels``); value: a 1x1 conv
    C -> C; weights ``softmax(q k^T / sqrt(d))`` over the map's positions; output: a 1x1
    conv-BN-``activation`` C -> C on the context (mmsegmentation's ISA ``SelfAttentionBlock``,
    openseg's ``SelfAttentionBlock2D``). The value conv has no bias: the weights sum to 1, so a
    bias would add one constant per channel, which the output's BatchNorm subtracts again
    (openseg has none; mmseg's is cancelled so).
    """

    def __init__(self, channels: int, *, key_channels: int, activation: Activation = "relu") -> None:
        super().__init__()
        self.key_channels = key_channels
        self.query = nn.Sequential(ConvNormAct(channels, key_channels, 1, activation=activation),
                                   ConvNormAct(key_channels, key_channels, 1, activation=activation))
        self.key = nn.Sequential(ConvNormAct(channels, key_channels, 1, activation=activation),
                                 ConvNormAct(key_channels, key_channels, 1, activation=activation))
        self.value = nn.Conv2d(channels, channels, 1, bias=False)
        self.out_project = ConvNormAct(channels, channels, 1, activation=activation)

    def weights(self, x: Tensor) -> Tensor:
        """The attention matrix of each map, (B', h*w, h*w); rows (queries) sum to 1."""
        query, key = self.query(x).flatten(2), self.key(x).flatten(2)
        return torch.softmax(query.transpose(1, 2) @ key * self.key_channels**-0.5, dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        query, key, value = self.query(x).flatten(2), self.key(x).flatten(2), self.value(x).flatten(2)
        context = softmax_attention(query, key, value, self.key_channels**-0.5)
        return self.out_project(context.unflatten(2, x.shape[-2:]))


class InterlacedSparseAttention(nn.Module):
    """Long-range attention across interlaced groups, then short-range attention within blocks.

    Input (B, C, H, W), output the context (B, C, H, W) (no residual: the head concatenates it
    with its input). With ``down_factor`` (P_h, P_w), the map is zero-padded (split evenly, the
    odd row or column at the bottom / right) to multiples (G_h P_h, G_w P_w) and cut into
    G_h x G_w blocks of P_h x P_w positions:

    - long range (``long_range``): the positions with the same offset in every block, P_h P_w
      groups of G_h G_w positions each P_h rows / P_w columns apart, attend within their group;
    - short range (``short_range``): on that output, the positions of each block attend within
      the block.

    After the two steps every position has drawn on every other one (through the one position of
    its block that shares the other's offset). Each step is a :class:`GroupedSelfAttention` with
    its own weights; padded positions take part as keys and in the BatchNorm statistics, and are
    cut off at the end (mmsegmentation's ``ISAHead``, openseg's ``ISA_Block``).
    """

    def __init__(self, channels: int, *, key_channels: int, down_factor: Sequence[int] = (8, 8),
                 activation: Activation = "relu") -> None:
        super().__init__()
        down_factor = tuple(down_factor)
        if len(down_factor) != 2 or min(down_factor) < 1:
            raise ConfigError(f"down_factor must be two positive block sizes (P_h, P_w), got {down_factor}")
        self.down_factor = down_factor
        self.long_range = GroupedSelfAttention(channels, key_channels=key_channels, activation=activation)
        self.short_range = GroupedSelfAttention(channels, key_channels=key_channels, activation=activation)

    def padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) zero padding to whole blocks."""
        block_h, block_w = self.down_factor
        pad_h, pad_w = (block_h - height % block_h) % block_h, (block_w - width % block_w) % block_w
        return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2

    def _long_range_groups(self, x: Tensor) -> Tensor:
        """Padded (B, C, H, W) -> (B * P_h * P_w, C, G_h, G_w): one map per interlaced group."""
        batch, channels, height, width = x.shape
        block_h, block_w = self.down_factor
        x = x.view(batch, channels, height // block_h, block_h, width // block_w, block_w)
        return x.permute(0, 3, 5, 1, 2, 4).flatten(0, 2)

    def _short_range_groups(self, y: Tensor, batch: int, size: tuple[int, int]) -> Tensor:
        """Long-range output (B * P_h * P_w, C, G_h, G_w) -> (B * G_h * G_w, C, P_h, P_w): one map per block."""
        block_h, block_w = self.down_factor
        y = y.view(batch, block_h, block_w, y.shape[1], size[0] // block_h, size[1] // block_w)
        return y.permute(0, 4, 5, 3, 1, 2).flatten(0, 2)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        left, right, top, bottom = self.padding(height, width)
        padded = F.pad(x, (left, right, top, bottom))
        size = padded.shape[-2:]
        block_h, block_w = self.down_factor
        y = self.short_range(self._short_range_groups(self.long_range(self._long_range_groups(padded)), batch, size))
        y = y.view(batch, size[0] // block_h, size[1] // block_w, channels, block_h, block_w)
        y = y.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, size[0], size[1])
        return y[:, :, top:top + height, left:left + width]

    def attention_maps(self, x: Tensor, queries: Tensor) -> dict[str, Tensor]:
        """Each query's weights at the image positions: (B, Q, H, W) per map.

        - ``long_range``: the query position's long-range weights over its interlaced group;
        - ``short_range``: its short-range weights over its block (on the long-range output);
        - ``composed``: attention rollout over the two steps, row p (the query) of
          ``A_short A_long``: the weight with which the query's context draws on each input
          position along attention paths; non-zero everywhere. As CCNet's ``composed`` map, the
          channel mixing between the steps (value and output convs) is left out.

        Weights on padded positions are at no image position and are left out, so with padding
        a map sums to less than 1 (without, to 1). ``queries``: (Q, 2) (row, col) in x's
        resolution. The BatchNorms use their current mode (call ``eval()`` first).
        """
        rows, cols = query_positions(queries, x)
        batch, _, height, width = x.shape
        left, right, top, bottom = self.padding(height, width)
        padded = F.pad(x, (left, right, top, bottom))
        size = padded.shape[-2:]
        block_h, block_w = self.down_factor
        grid_h, grid_w = size[0] // block_h, size[1] // block_w
        groups = self._long_range_groups(padded)
        long_weights = self.long_range.weights(groups)  # (B * P_h * P_w, G, G)
        blocks = self._short_range_groups(self.long_range(groups), batch, size)
        short_weights = self.short_range.weights(blocks)  # (B * G_h * G_w, P, P)
        long_weights = long_weights.view(batch, block_h, block_w, grid_h * grid_w, grid_h, grid_w)
        short_weights = short_weights.view(batch, grid_h, grid_w, block_h * block_w, block_h, block_w)

        rows, cols = rows + top, cols + left  # padded coordinates
        block_row, offset_row = rows // block_h, rows % block_h
        block_col, offset_col = cols // block_w, cols % block_w
        block = block_row * grid_w + block_col  # the query's block, its index within its long-range group
        # (B, Q, P_h, P_w): the query's short-range weights over its block
        short = short_weights[:, block_row, block_col, offset_row * block_w + offset_col]
        # (B, Q, P_h, P_w, G_h, G_w): the long-range weights of each position of the query's block
        long_of_block = long_weights[:, :, :, block].permute(0, 3, 1, 2, 4, 5)
        composed = short[..., None, None] * long_of_block

        def to_image(m: Tensor) -> Tensor:
            """(B, Q, P_h, P_w, G_h, G_w) by (offset, block) -> (B, Q, H, W) at the image positions."""
            m = m.permute(0, 1, 4, 2, 5, 3).reshape(*m.shape[:2], *size)
            return m[:, :, top:top + height, left:left + width]

        queries_range = torch.arange(rows.shape[0], device=x.device)
        placed_short = x.new_zeros(batch, rows.shape[0], grid_h, grid_w, block_h, block_w)
        placed_short[:, queries_range, block_row, block_col] = short
        placed_short = placed_short.permute(0, 1, 4, 5, 2, 3)
        placed_long = x.new_zeros(batch, rows.shape[0], block_h, block_w, grid_h, grid_w)
        placed_long[:, queries_range, offset_row, offset_col] = long_weights[:, offset_row, offset_col, block]
        return {"long_range": to_image(placed_long), "short_range": to_image(placed_short),
                "composed": to_image(composed)}
