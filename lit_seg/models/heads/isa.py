"""ISA head (Huang et al., "Interlaced Sparse Self-Attention for Semantic Segmentation", IJCV 2021,
arXiv:1907.12273), as mmsegmentation's ``ISAHead`` and openseg's ``ISA_Module``."""

from collections.abc import Sequence

import torch
from torch import Tensor

from lit_seg.models.attention import InterlacedSparseAttention
from lit_seg.models.heads.base import DecodeHead
from lit_seg.models.layers import Activation


class ISAHead(DecodeHead):
    """3x3 conv in -> interlaced sparse self-attention (long range, then short range) -> concat
    with the conv output -> 1x1 fuse 2C -> C -> dropout -> classifier.

    The block is :class:`~lit_seg.models.attention.InterlacedSparseAttention`; each of its two
    steps has query/key projections of two 1x1 conv-BN-act layers to ``isa_channels``, a 1x1
    value conv and a 1x1 conv-BN-act output projection, and no residual (the concatenation is
    the head's).

    Args:
        isa_channels: query/key width; None: C/2 (the recipe's 256 at C = 512).
        down_factor: (P_h, P_w), the size of the short-range blocks (8, 8); the long-range groups
            are the positions P_h rows and P_w columns apart. A map that is not a multiple is
            zero-padded.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        dropout: float = 0.1,
        in_index: int = -1,
        isa_channels: int | None = None,
        down_factor: Sequence[int] = (8, 8),
        activation: Activation = "relu",
    ) -> None:
        super().__init__(in_channels, num_classes, channels, dropout, in_index, activation)
        self.conv_in = self.conv(self.in_channels, channels)
        self.attention = InterlacedSparseAttention(channels, key_channels=isa_channels or max(channels // 2, 1),
                                                   down_factor=down_factor, activation=activation)
        self.fuse = self.conv(2 * channels, channels, 1)

    def context(self, x: Tensor) -> Tensor:
        y = self.conv_in(x)
        return self.fuse(torch.cat([self.attention(y), y], dim=1))

    def attention_maps(self, x: Tensor, queries: Tensor) -> dict[str, Tensor]:
        """``long_range``, ``short_range`` and ``composed`` (B, Q, h, w)
        (:meth:`InterlacedSparseAttention.attention_maps`). Call ``eval()`` first."""
        return self.attention.attention_maps(self.conv_in(x), queries)
