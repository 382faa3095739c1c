"""Asymmetric non-local blocks (Zhu et al., "Asymmetric Non-local Neural Networks for Semantic
Segmentation", ICCV 2019, arXiv:1908.07678): non-local attention whose keys and values are
pyramid-pooled to M = sum(s^2) positions, so it costs N x M instead of N x N. AFNB fuses two
encoder stages (low-level keys and values, high-level queries), APNB attends within one map.
As mmsegmentation's ``ann_head.py`` (``PPMConcat``, ``SelfAttentionBlock``, ``AFNB``, ``APNB``)."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_seg.errors import ConfigError
from lit_seg.models.attention.functional import query_positions, softmax_attention
from lit_seg.models.layers import Activation, ConvNormAct


def pyramid_pool(x: Tensor, scales: Sequence[int]) -> Tensor:
    """(B, C, H, W) -> (B, C, sum s^2): adaptive average pooling to each s x s grid, flattened and
    concatenated in the order of ``scales`` (mmseg's ``PPMConcat``)."""
    return torch.cat([F.adaptive_avg_pool2d(x, scale).flatten(2) for scale in scales], dim=2)


def adaptive_pool_matrix(length: int, size: int, device=None, dtype=None) -> Tensor:
    """(size, length): row i averages the bins of ``adaptive_avg_pool`` along one axis, from
    floor(i * length / size) to ceil((i + 1) * length / size) (PyTorch's bins; they may overlap)."""
    matrix = torch.zeros(size, length, device=device, dtype=dtype)
    for i in range(size):
        start, end = (i * length) // size, -((-(i + 1) * length) // size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def spread_over_bins(weights: Tensor, size: tuple[int, int], scales: Sequence[int]) -> Tensor:
    """Weights over the pooled keys (B, Q, sum s^2) -> weights over the positions (B, Q, H, W).

    Each key's weight is spread evenly over the positions its bin averages (the adjoint of
    :func:`pyramid_pool`), so ``sum_m w_m pooled_m = sum_p map_p x_p`` exactly, and the map sums to
    the weights' sum.
    """
    height, width = size
    out = weights.new_zeros(*weights.shape[:2], height, width)
    start = 0
    for scale in scales:
        rows = adaptive_pool_matrix(height, scale, weights.device, weights.dtype)  # (s, H)
        cols = adaptive_pool_matrix(width, scale, weights.device, weights.dtype)  # (s, W)
        grid = weights[..., start:start + scale * scale].unflatten(-1, (scale, scale))
        out = out + rows.t() @ grid @ cols
        start += scale * scale
    return out


class PyramidKeyAttention(nn.Module):
    """Attention of query positions over pyramid-pooled keys: ``out(sum_m softmax_m(q . k_m / sqrt(d)) v_m)``.

    Queries come from ``query_feats`` (B, query_channels, H, W), keys and values from
    ``key_feats`` (B, key_in_channels, H', W'; any size): q = 1x1 conv + BN + activation to d =
    ``key_channels`` channels (shared with the key's when ``share_key_query``), k likewise, v a
    1x1 conv (with bias) to d; k and v are projected at full resolution and then pooled by
    :func:`pyramid_pool` to M = sum s^2 positions; ``out`` is a 1x1 conv d -> out_channels whose
    weight and bias start at zero (mmseg's ``constant_init(out_project, 0)``), so a fresh block
    returns 0. Output (B, out_channels, H, W).
    """

    def __init__(
        self,
        key_in_channels: int,
        query_channels: int,
        out_channels: int,
        *,
        key_channels: int,
        pool_scales: Sequence[int] = (1, 3, 6, 8),
        share_key_query: bool = False,
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        if not pool_scales or min(pool_scales) < 1:
            raise ConfigError(f"pool_scales must be positive integers, got {pool_scales}")
        if share_key_query and key_in_channels != query_channels:
            raise ConfigError("a shared key/query projection needs one input width, got "
                              f"{key_in_channels} and {query_channels}")
        self.key_channels = key_channels
        self.pool_scales = tuple(pool_scales)
        self.key = ConvNormAct(key_in_channels, key_channels, 1, activation=activation)
        self.query = self.key if share_key_query else ConvNormAct(query_channels, key_channels, 1,
                                                                  activation=activation)
        self.value = nn.Conv2d(key_in_channels, key_channels, 1)
        self.out = nn.Conv2d(key_channels, out_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, query_feats: Tensor, key_feats: Tensor) -> Tensor:
        key = pyramid_pool(self.key(key_feats), self.pool_scales)
        value = pyramid_pool(self.value(key_feats), self.pool_scales)
        context = softmax_attention(self.query(query_feats).flatten(2), key, value, self.key_channels**-0.5)
        return self.out(context.unflatten(2, query_feats.shape[-2:]))

    def attention_weights(self, query_feats: Tensor, key_feats: Tensor, queries: Tensor) -> Tensor:
        """Softmax weights of the query positions over the M pooled keys: (B, Q, M), rows sum to 1."""
        rows, cols = query_positions(queries, query_feats)
        key = pyramid_pool(self.key(key_feats), self.pool_scales)  # (B, d, M)
        query = self.query(query_feats)[:, :, rows, cols]  # (B, d, Q)
        return (query.transpose(1, 2) @ key * self.key_channels**-0.5).softmax(dim=-1)

    def attention_map(self, query_feats: Tensor, key_feats: Tensor, queries: Tensor) -> Tensor:
        """The weights spread over the key map's positions (:func:`spread_over_bins`): (B, Q, H', W'),
        each map sums to 1 and ``sum_p map_p v_p`` is the query's context before ``out``."""
        weights = self.attention_weights(query_feats, key_feats, queries)
        return spread_over_bins(weights, tuple(key_feats.shape[-2:]), self.pool_scales)


class AsymmetricFusion(nn.Module):
    """AFNB: high-level queries attend to pyramid-pooled low-level keys and values.

    ``low`` (B, low_channels, H', W'), ``high`` (B, high_channels, H, W) -> (B, high_channels,
    H, W): ``fuse([attention(high, low), high])``, ``fuse`` a 1x1 conv 2 * high_channels ->
    high_channels + BatchNorm, no activation (mmseg's ``AFNB.bottleneck``).
    """

    def __init__(self, low_channels: int, high_channels: int, *, key_channels: int,
                 pool_scales: Sequence[int] = (1, 3, 6, 8), activation: Activation = "relu") -> None:
        super().__init__()
        self.attention = PyramidKeyAttention(low_channels, high_channels, high_channels, key_channels=key_channels,
                                             pool_scales=pool_scales, activation=activation)
        self.fuse = ConvNormAct(2 * high_channels, high_channels, 1, activation=None)

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        return self.fuse(torch.cat([self.attention(high, low), high], dim=1))


class AsymmetricPyramid(nn.Module):
    """APNB: self-attention of a map over its own pyramid-pooled keys and values (query and key share
    one projection). (B, C, H, W) -> (B, C, H, W): ``fuse([attention(x, x), x])``, ``fuse`` a 1x1
    conv 2C -> C + BatchNorm + activation (mmseg's ``APNB.bottleneck``)."""

    def __init__(self, channels: int, *, key_channels: int, pool_scales: Sequence[int] = (1, 3, 6, 8),
                 activation: Activation = "relu") -> None:
        super().__init__()
        self.attention = PyramidKeyAttention(channels, channels, channels, key_channels=key_channels,
                                             pool_scales=pool_scales, share_key_query=True, activation=activation)
        self.fuse = ConvNormAct(2 * channels, channels, 1, activation=activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(torch.cat([self.attention(x, x), x], dim=1))
