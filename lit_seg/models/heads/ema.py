"""EMANet head (Li et al., "Expectation-Maximization Attention Networks for Semantic Segmentation",
ICCV 2019), as mmsegmentation's ``EMAHead``."""

from collections.abc import Sequence

import torch
from torch import Tensor

from lit_seg.models.attention import ExpectationMaximizationAttention
from lit_seg.models.heads.base import DecodeHead
from lit_seg.models.layers import Activation


class EMAHead(DecodeHead):
    """3x3 conv in -> EMA unit -> 3x3 conv out -> concat with the input -> 3x3 fuse -> classifier.

    The unit is :class:`~lit_seg.models.attention.ExpectationMaximizationAttention` at
    ``ema_channels`` (mmseg's ``ema_mid_conv`` (frozen), ``EMAModule``, ``ema_out_conv`` and the
    residual); conv in maps the input to ``ema_channels``, conv out (mmseg's ``bottleneck``) to
    ``channels``, and with ``concat_input`` the input and that output are fused by a 3x3 conv.
    In training every forward moves the unit's bases buffer (a moving average, after the output
    is computed); evaluation leaves it alone.

    Args:
        ema_channels: width of the EMA unit; None: ``channels``. mmseg's config uses 512 with a
            256-wide head after it; here the head keeps the recipe's one width (512).
        num_bases: K, the number of bases (64).
        num_stages: EM iterations per forward (3).
        momentum: of the bases' moving average (0.1).
        concat_input: fuse the head's input with the unit's output (mmseg: True).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        dropout: float = 0.1,
        in_index: int = -1,
        ema_channels: int | None = None,
        num_bases: int = 64,
        num_stages: int = 3,
        momentum: float = 0.1,
        concat_input: bool = True,
        activation: Activation = "relu",
    ) -> None:
        super().__init__(in_channels, num_classes, channels, dropout, in_index, activation)
        ema_channels = ema_channels or channels
        self.conv_in = self.conv(self.in_channels, ema_channels)
        self.attention = ExpectationMaximizationAttention(ema_channels, num_bases=num_bases, num_stages=num_stages,
                                                          momentum=momentum)
        self.conv_out = self.conv(ema_channels, channels)
        self.fuse = self.conv(self.in_channels + channels, channels) if concat_input else None

    def context(self, x: Tensor) -> Tensor:
        y = self.conv_out(self.attention(self.conv_in(x)))
        return self.fuse(torch.cat([x, y], dim=1)) if self.fuse is not None else y

    def attention_maps(self, x: Tensor, queries: Tensor) -> dict[str, Tensor]:
        """``{"ema": (B, Q, h, w)}``: the weights with which each query's EM reconstruction sums
        the positions, its responsibilities over the bases projected back through the bases
        (:meth:`ExpectationMaximizationAttention.attention_map`; non-negative, not normalised).
        Call ``eval()`` first for the trained BatchNorm statistics."""
        return {"ema": self.attention.attention_map(self.conv_in(x), queries)}
