"""FCN head (Long et al., CVPR 2015): the no-context baseline, and the auxiliary head."""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lit_seg.errors import ConfigError
from lit_seg.models.heads.base import DecodeHead
from lit_seg.models.layers import Activation


class FCNHead(DecodeHead):
    """``num_convs`` 3x3 conv-BN-ReLU layers, optionally concatenated with the input and fused.

    Defaults are mmsegmentation's ``FCNHead`` (two convs, input concatenated). As the auxiliary
    head on the second-to-last stage it is one conv, 256 channels, no concatenation.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        dropout: float = 0.1,
        in_index: int = -1,
        num_convs: int = 2,
        concat_input: bool = True,
        kernel_size: int = 3,
        dilation: int = 1,
        activation: Activation = "relu",
    ) -> None:
        super().__init__(in_channels, num_classes, channels, dropout, in_index, activation)
        if num_convs < 1:
            raise ConfigError(f"FCNHead: num_convs must be >= 1, got {num_convs}")
        widths = [self.in_channels] + [channels] * num_convs
        self.convs = nn.Sequential(
            *(self.conv(a, b, kernel_size, dilation) for a, b in zip(widths[:-1], widths[1:]))
        )
        self.fuse = self.conv(self.in_channels + channels, channels, kernel_size) if concat_input else None

    def context(self, x: Tensor) -> Tensor:
        y = self.convs(x)
        return self.fuse(torch.cat([x, y], dim=1)) if self.fuse is not None else y
