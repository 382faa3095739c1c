"""CCNet head (Huang et al., ICCV 2019): recurrent criss-cross attention."""

from collections.abc import Sequence

import torch
from torch import Tensor

from lit_seg.models.attention import CrissCrossAttention
from lit_seg.models.heads.base import DecodeHead
from lit_seg.models.layers import ConvNormAct


class CCHead(DecodeHead):
    """Conv in -> criss-cross attention applied ``recurrence`` times (shared weights) -> conv out
    -> concat with the input -> 3x3 fuse -> classifier (the paper's RCCA module).

    Args:
        recurrence: R, how many times the one attention block is applied. R=2 (the paper's
            choice) lets every position reach every other one.
        reduction: query/key channels are ``channels // reduction``.
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
    ) -> None:
        super().__init__(in_channels, num_classes, channels, dropout, in_index)
        if recurrence < 1:
            raise ValueError(f"CCHead: recurrence must be >= 1, got {recurrence}")
        self.recurrence = recurrence
        self.conv_in = ConvNormAct(self.in_channels, channels)
        self.attention = CrissCrossAttention(channels, reduction)
        self.conv_out = ConvNormAct(channels, channels)
        self.fuse = ConvNormAct(self.in_channels + channels, channels)

    def context(self, x: Tensor) -> Tensor:
        y = self.conv_in(x)
        for _ in range(self.recurrence):
            y = self.attention(y)
        y = self.conv_out(y)
        return self.fuse(torch.cat([x, y], dim=1))
