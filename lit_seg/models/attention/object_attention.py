"""OCR's object attention (Yuan, Chen, Wang, "Object-Contextual Representations for Semantic
Segmentation", ECCV 2020, arXiv:1909.11065): pixel -> object region attention, fused with the pixel."""

import torch
from torch import Tensor, nn

from lit_seg.models.attention.functional import softmax_attention
from lit_seg.models.layers import Activation, ConvNormAct


class ObjectAttention(nn.Module):
    """The object-contextual representation of every pixel, fused with the pixel's own features.

    Inputs: pixel features x (B, C, H, W) and K object region representations (B, C, K, 1)
    (:class:`~lit_seg.models.attention.SpatialGather`). With d = ``key_channels``, every
    projection a 1x1 conv-BN-``activation``:

    - query ``pixel_query(x)``: two layers, C -> d -> d;
    - key ``region_key(regions)``: two layers, C -> d -> d; value ``region_value(regions)``: one,
      C -> d (their BatchNorm normalises over the B*K region vectors);
    - pixel-region relation ``w[p, k] = softmax_k(q_p . k_k / sqrt(d))`` (B, H*W, K);
    - object context ``out_project(sum_k w[p, k] v_k)``: d -> C;
    - output ``fuse(cat[context, x])``: 2C -> C, (B, C, H, W).

    mmsegmentation's ``ObjectAttentionBlock`` (its ``scale`` 1) with the bottleneck it holds;
    openseg's ``SpatialOCR_Module`` (``ObjectAttentionBlock2D`` + ``conv_bn_dropout``) has the same
    layers and adds dropout 0.05 after the fusion. Nothing is zero-initialised (neither
    reference does so): a fresh block already mixes in the context.
    """

    def __init__(self, channels: int, *, key_channels: int, activation: Activation = "relu") -> None:
        super().__init__()
        self.key_channels = key_channels

        def project(width_in: int, width_out: int, layers: int) -> nn.Sequential:
            widths = [width_in] + [width_out] * layers
            return nn.Sequential(*(ConvNormAct(a, b, 1, activation=activation) for a, b in zip(widths, widths[1:])))

        self.pixel_query = project(channels, key_channels, 2)
        self.region_key = project(channels, key_channels, 2)
        self.region_value = project(channels, key_channels, 1)
        self.out_project = project(key_channels, channels, 1)
        self.fuse = project(2 * channels, channels, 1)

    def relation(self, x: Tensor, regions: Tensor) -> Tensor:
        """The pixel-region weights ``w`` (B, H*W, K); each row sums to 1."""
        query = self.pixel_query(x).flatten(2)  # (B, d, N)
        key = self.region_key(regions).flatten(2)  # (B, d, K)
        return torch.softmax(query.transpose(1, 2) @ key * self.key_channels**-0.5, dim=-1)

    def forward(self, x: Tensor, regions: Tensor) -> Tensor:
        query = self.pixel_query(x).flatten(2)
        key = self.region_key(regions).flatten(2)
        value = self.region_value(regions).flatten(2)
        context = softmax_attention(query, key, value, self.key_channels**-0.5).unflatten(2, x.shape[-2:])
        return self.fuse(torch.cat([self.out_project(context), x], dim=1))
