"""PSPNet head (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017): pyramid pooling, no attention."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_seg.errors import ConfigError
from lit_seg.models.heads.base import DecodeHead
from lit_seg.models.layers import Activation


class PSPHead(DecodeHead):
    """Pyramid pooling module -> concat with the input -> 3x3 fuse -> classifier (mmseg's ``PSPHead``).

    Each scale s average-pools the input to an s x s grid (``AdaptiveAvgPool2d``, so any feature
    size works), projects it with a 1x1 conv-BN-ReLU to ``channels`` and upsamples it back
    (bilinear, ``align_corners=False``); the input and the ``len(pool_scales)`` branches are
    concatenated and fused by a 3x3 conv-BN-ReLU. The 1x1 branch is BatchNorm on one value per
    image: training needs batches of at least 2 (as in mmsegmentation).

    Args:
        pool_scales: grid sizes of the pyramid, (1, 2, 3, 6) in the paper and mmsegmentation.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        dropout: float = 0.1,
        in_index: int = -1,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        activation: Activation = "relu",
    ) -> None:
        super().__init__(in_channels, num_classes, channels, dropout, in_index, activation)
        if not pool_scales or min(pool_scales) < 1:
            raise ConfigError(f"PSPHead: pool_scales must be positive integers, got {pool_scales}")
        self.pool_scales = tuple(pool_scales)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), self.conv(self.in_channels, channels, 1))
            for scale in self.pool_scales
        )
        self.bottleneck = self.conv(self.in_channels + len(self.pool_scales) * channels, channels)

    def context(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False) for stage in self.stages]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))
