"""DeepLabV3 head (Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation",
arXiv:1706.05587): atrous spatial pyramid pooling with an image-pooling branch, no attention."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_seg.errors import ConfigError
from lit_seg.models.heads.base import DecodeHead
from lit_seg.models.layers import Activation


class ASPPHead(DecodeHead):
    """[image pooling, one conv per dilation] -> concat -> 3x3 fuse -> classifier (mmseg's ``ASPPHead``).

    Image pooling: global average pool -> 1x1 conv-BN-ReLU -> upsampled (bilinear) to the map.
    Dilation 1 is a 1x1 conv-BN-ReLU, every other dilation d a 3x3 conv-BN-ReLU with dilation d;
    all branches have ``channels`` channels and the concatenation is fused by a 3x3 conv-BN-ReLU.
    The pooling branch is BatchNorm on one value per image: training needs batches of at least 2
    per process (or SyncBatchNorm), as in mmsegmentation.

    Args:
        dilations: (1, 12, 24, 36), mmsegmentation's choice at output stride 8 (the paper's
            (1, 6, 12, 18) at stride 16, doubled). A tap further than the map's size reads only
            padding: on small maps scale them down.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        dropout: float = 0.1,
        in_index: int = -1,
        dilations: Sequence[int] = (1, 12, 24, 36),
        activation: Activation = "relu",
    ) -> None:
        super().__init__(in_channels, num_classes, channels, dropout, in_index, activation)
        if not dilations or min(dilations) < 1:
            raise ConfigError(f"ASPPHead: dilations must be positive integers, got {dilations}")
        self.dilations = tuple(dilations)
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), self.conv(self.in_channels, channels, 1))
        self.branches = nn.ModuleList(
            self.conv(self.in_channels, channels, 1 if d == 1 else 3, d) for d in self.dilations
        )
        self.bottleneck = self.conv((len(self.dilations) + 1) * channels, channels)

    def context(self, x: Tensor) -> Tensor:
        pooled = F.interpolate(self.image_pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.bottleneck(torch.cat([pooled, *(branch(x) for branch in self.branches)], dim=1))
