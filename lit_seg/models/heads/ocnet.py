"""OCNet heads (Yuan et al., "OCNet: Object Context Network for Scene Parsing", arXiv:1809.00916):
base-OC, Pyramid-OC and ASP-OC, as the networks of the official code (openseg-group/OCNet.pytorch)."""

from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from lit_seg.errors import ConfigError
from lit_seg.models.attention import SelfAttention2d
from lit_seg.models.attention.functional import query_positions, softmax_attention
from lit_seg.models.heads.base import DecodeHead
from lit_seg.models.layers import Activation

OCMode = Literal["base", "pyramid", "asp"]


def region_bounds(length: int, parts: int) -> list[tuple[int, int]]:
    """Split ``range(length)`` into ``min(parts, length)`` contiguous, non-empty, near-equal parts.

    The official code gives every part ``length // parts`` and the last one the remainder (and
    empty parts when ``length < parts``); this spreads the remainder instead: 13 in 6 parts is
    2,2,2,2,2,3 both ways, 17 in 6 is 2,3,3,3,3,3 here (2,2,2,2,2,7 there).
    """
    parts = max(1, min(parts, length))
    edges = [i * length // parts for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _region_ids(length: int, parts: int, device: torch.device) -> Tensor:
    ids = torch.empty(length, dtype=torch.long, device=device)
    for index, (start, end) in enumerate(region_bounds(length, parts)):
        ids[start:end] = index
    return ids


def _axis_groups(length: int, parts: int) -> list[tuple[int, list[int]]]:
    """:func:`region_bounds` grouped by region length: [(length, [starts])], at most two groups."""
    groups: dict[int, list[int]] = {}
    for start, end in region_bounds(length, parts):
        groups.setdefault(end - start, []).append(start)
    return sorted(groups.items())


def _grouped_order(groups: list[tuple[int, list[int]]], device: torch.device) -> Tensor:
    """Positions reordered so that the regions of each length are contiguous, group after group."""
    order = [p for size, starts in groups for start in starts for p in range(start, start + size)]
    return torch.tensor(order, dtype=torch.long, device=device)


def regional_self_attention(block: SelfAttention2d, x: Tensor, size: int) -> Tensor:
    """OCNet's ``_PyramidSelfAttentionBlock``: ``block``'s attention within each of size x size regions.

    Key/query and value projections run on the whole map (so their BatchNorm sees the whole
    map, as in the official code); each region attends only to itself; the output conv ``W``
    runs on the reassembled map. (B, C, H, W) -> (B, block.out_channels, H, W); any H, W.

    Regions come in at most four shapes (two lengths per axis); the rows and columns are
    reordered so that regions of one shape tile a block, and each block is one batched
    attention call (instead of one call per region).
    """
    if block.scale != 1:
        raise ValueError("regional_self_attention needs a SelfAttention2d with scale 1")
    batch, _, height, width = x.shape
    row_groups, col_groups = _axis_groups(height, size), _axis_groups(width, size)
    # Reordering is needed only where an axis has regions of two lengths (they interleave).
    row_order = _grouped_order(row_groups, x.device) if len(row_groups) > 1 else None
    col_order = _grouped_order(col_groups, x.device) if len(col_groups) > 1 else None

    def reorder(t: Tensor, rows: Tensor | None, cols: Tensor | None) -> Tensor:
        t = t if rows is None else t[:, :, rows]
        return t if cols is None else t[:, :, :, cols]

    key = reorder(block.f_key(x), row_order, col_order)
    value = reorder(block.f_value(x), row_order, col_order)
    scale = block.key_channels**-0.5

    def cells(t: Tensor, rows: slice, cols: slice, shape: tuple[int, int, int, int]) -> Tensor:
        n_rows, region_height, n_cols, region_width = shape
        t = t[:, :, rows, cols].unflatten(2, (n_rows, region_height)).unflatten(4, (n_cols, region_width))
        return t.permute(0, 2, 4, 1, 3, 5).flatten(0, 2).flatten(2)  # (B * regions, C, region pixels)

    context_rows = []
    top = 0
    for region_height, row_starts in row_groups:
        rows = slice(top, top + len(row_starts) * region_height)
        top = rows.stop
        blocks = []
        left = 0
        for region_width, col_starts in col_groups:
            cols = slice(left, left + len(col_starts) * region_width)
            left = cols.stop
            shape = (len(row_starts), region_height, len(col_starts), region_width)
            k = cells(key, rows, cols, shape)
            out = softmax_attention(k, k, cells(value, rows, cols, shape), scale)
            out = out.unflatten(0, (batch, shape[0], shape[2])).unflatten(-1, (region_height, region_width))
            blocks.append(out.permute(0, 3, 1, 4, 2, 5).flatten(4, 5).flatten(2, 3))
        context_rows.append(torch.cat(blocks, dim=3))
    context = torch.cat(context_rows, dim=2)
    context = reorder(context, None if row_order is None else row_order.argsort(),
                      None if col_order is None else col_order.argsort())
    return block.W(context)


def regional_attention_map(block: SelfAttention2d, x: Tensor, size: int, queries: Tensor) -> Tensor:
    """Weights of each query over its own region, placed in the full map (zero elsewhere): (B, Q, H, W)."""
    rows, cols = query_positions(queries, x)
    height, width = x.shape[-2:]
    key = block.f_key(x)
    row_ids, col_ids = _region_ids(height, size, x.device), _region_ids(width, size, x.device)
    same_region = (row_ids[None, :, None] == row_ids[rows][:, None, None]) & (
        col_ids[None, None, :] == col_ids[cols][:, None, None])  # (Q, H, W)
    query = key[:, :, rows, cols].transpose(1, 2)  # (B, Q, key_channels)
    energy = query @ key.flatten(2) * block.key_channels**-0.5
    energy = energy.masked_fill(~same_region.flatten(1), float("-inf"))
    return energy.softmax(dim=-1).unflatten(-1, (height, width))


class OCHead(DecodeHead):
    """Object context head in one of OCNet's three forms (``mode``), as the official networks
    (openseg-group/OCNet.pytorch ``network/resnet101_{base,pyramid,asp}_oc.py``, 2019 release).

    C is ``channels`` (512 in the official code). Every conv is conv-BN-activation unless noted.

    - ``base`` (base-OC): 3x3 conv in -> C -> self-attention (key C/2, value C/2, out C) ->
      concat with the conv output -> 1x1 fuse 2C -> C -> dropout 0.05 -> classifier.
    - ``pyramid`` (Pyramid-OC): 3x3 conv in -> C, BatchNorm without activation (the official
      ``layer5``) -> for each s in ``sizes`` self-attention (key C/2, value C, out C) within each
      of s x s regions; the conv output widened by a 1x1 conv to ``len(sizes) * C``; all
      concatenated -> 1x1 fuse -> C -> dropout 0.05 -> classifier. Regions that do not divide
      the map evenly differ in size by one (:func:`region_bounds`).
    - ``asp`` (ASP-OC): 3x3 conv in -> C, then the ASP-OC module at width C/2 on it: a context
      branch (3x3 conv C -> C/2, self-attention with key C/4, value C/2, out C/2, max-pooled by
      ``scale`` 2, 1x1 conv C/2 -> C/2), a 1x1 conv and three dilated 3x3 convs (``dilations``),
      each C -> C/2; concatenated 5 x C/2 -> 1x1 fuse -> C -> dropout 0.1 -> classifier. (The
      first, 2018 release ran every branch on the raw encoder features at width C: 2.7x the
      parameters at the recipe's size. It is not provided.)

    The self-attention block is :class:`~lit_seg.models.attention.SelfAttention2d` (shared
    query/key projection, zero-initialised output conv: a fresh block adds no context).

    Args:
        mode: ``base``, ``pyramid`` or ``asp``.
        dropout: before the classifier; None: the official value, 0.05 (base, pyramid) or 0.1 (asp).
        sizes: Pyramid-OC's region grids, (1, 2, 3, 6).
        dilations: ASP-OC's dilated branches, (12, 24, 36) at output stride 8.
        key_channels: query/key width; None: the official choice (C/2; C/4 in ASP-OC).
        value_channels: value width; None: the official choice (C/2 base, C pyramid, C/2 asp).
        scale: max-pool factor before the attention (saves memory); None: the official choice,
            1 for base-OC and 2 for ASP-OC. Pyramid-OC supports only 1.
        activation: None: ``relu`` (the recipe's) for base-OC and Pyramid-OC, ``leaky_relu`` (the
            official InPlaceABN's) for ASP-OC, which refuses ``relu``: its context branch ends in
            conv-BN-activation on the attention's output, which starts at exactly zero (the
            zero-initialised W), so the BN outputs its bias, 0, where ReLU's gradient is 0, and no
            parameter of the branch ever gets a gradient.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        dropout: float | None = None,
        in_index: int = -1,
        mode: OCMode = "base",
        sizes: Sequence[int] = (1, 2, 3, 6),
        dilations: Sequence[int] = (12, 24, 36),
        key_channels: int | None = None,
        value_channels: int | None = None,
        scale: int | None = None,
        activation: Activation | None = None,
    ) -> None:
        if mode not in get_args(OCMode):
            raise ConfigError(f"OCHead: mode must be one of {get_args(OCMode)}, got {mode!r}")
        if activation is None:
            activation = "leaky_relu" if mode == "asp" else "relu"
        if mode == "asp" and activation == "relu":
            raise ConfigError("OCHead: ASP-OC cannot train its object context with activation relu (its attention "
                              "output starts at zero, and ReLU passes no gradient there); use leaky_relu, the "
                              "official network's, or leave activation unset")
        if mode == "pyramid" and scale not in (None, 1):
            raise ConfigError(f"OCHead: Pyramid-OC attends within regions at full resolution; scale must be 1, "
                              f"got {scale}")
        dropout = (0.1 if mode == "asp" else 0.05) if dropout is None else dropout
        super().__init__(in_channels, num_classes, channels, dropout, in_index, activation)
        self.mode = mode
        half = max(channels // 2, 1)

        def attention(width: int, key: int, value: int, pool: int = 1) -> SelfAttention2d:
            return SelfAttention2d(width, key_channels=key_channels or key, value_channels=value_channels or value,
                                   scale=scale or pool, activation=activation)

        if mode == "base":
            self.conv_in = self.conv(self.in_channels, channels)
            self.attention = attention(channels, half, half)
            self.fuse = self.conv(2 * channels, channels, 1)
        elif mode == "pyramid":
            if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes):
                raise ConfigError(f"OCHead: sizes must be distinct positive integers, got {sizes}")
            self.sizes = tuple(sizes)
            self.conv_in = self.conv(self.in_channels, channels, act=False)
            self.stages = nn.ModuleList(attention(channels, half, channels) for _ in self.sizes)
            self.widen = self.conv(channels, len(self.sizes) * channels, 1)
            self.fuse = self.conv(2 * len(self.sizes) * channels, channels, 1)
        else:
            if not dilations or min(dilations) < 1:
                raise ConfigError(f"OCHead: dilations must be positive integers, got {dilations}")
            self.dilations = tuple(dilations)
            self.conv_in = self.conv(self.in_channels, channels)
            self.context_in = self.conv(channels, half)
            self.attention = attention(half, max(channels // 4, 1), half, pool=2)
            self.context_out = self.conv(half, half, 1)
            self.branches = nn.ModuleList(
                [self.conv(channels, half, 1)] + [self.conv(channels, half, 3, d) for d in self.dilations])
            self.fuse = self.conv((len(self.dilations) + 2) * half, channels, 1)

    def context(self, x: Tensor) -> Tensor:
        y = self.conv_in(x)
        if self.mode == "base":
            return self.fuse(torch.cat([self.attention(y), y], dim=1))
        if self.mode == "pyramid":
            regional = [regional_self_attention(stage, y, size) for stage, size in zip(self.stages, self.sizes)]
            return self.fuse(torch.cat([self.widen(y), *regional], dim=1))
        context = self.context_out(self.attention(self.context_in(y)))
        return self.fuse(torch.cat([context, *(branch(y) for branch in self.branches)], dim=1))

    def attention_maps(self, x: Tensor, queries: Tensor) -> dict[str, Tensor]:
        """Softmax weights of each query (each map sums to 1).

        base/asp: ``{"oc": (B, Q, h', w')}`` over the attention's keys ((h, w), or pooled by
        ``scale``); pyramid: ``{"pyramid_<s>": (B, Q, h, w)}`` per region grid s, non-zero only
        in the query's region. Call ``eval()`` first for the trained BatchNorm statistics.
        """
        y = self.conv_in(x)
        if self.mode == "pyramid":
            return {f"pyramid_{size}": regional_attention_map(stage, y, size, queries)
                    for stage, size in zip(self.stages, self.sizes)}
        if self.mode == "asp":
            y = self.context_in(y)
        return {"oc": self.attention.attention_map(y, queries)}
