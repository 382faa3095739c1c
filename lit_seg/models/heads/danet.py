"""DANet head (Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019), as
mmsegmentation's ``DAHead`` and the seed's ``_DAHead``."""

from collections.abc import Sequence
from typing import Literal, get_args

from torch import Tensor

from lit_seg.errors import ConfigError
from lit_seg.models.attention import ChannelAttention, PositionAttention
from lit_seg.models.heads.base import DecodeHead
from lit_seg.models.layers import Activation

DABranches = Literal["pam+cam", "pam", "cam"]


class DAHead(DecodeHead):
    """Two parallel branches on the input, summed, then the classifier (mmseg's ``DAHead``).

    Position branch: 3x3 conv -> position attention (PAM) -> 3x3 conv; channel branch:
    3x3 conv -> channel attention (CAM) -> 3x3 conv; both ``channels`` wide (the seed uses
    ``in_channels // 4``, mmsegmentation the head width). With both branches the head has three
    training outputs, each with its own dropout + 1x1 classifier and loss (as the paper and
    mmseg): ``out`` (the classified sum), ``pam`` and ``cam``; evaluation returns ``out``, the
    classified sum, as mmseg's ``forward_test``. With one branch only ``out``.

    Args:
        branches: ``pam+cam`` (DANet), or one branch alone for the ablation.
        reduction: PAM's query/key channels are ``channels // reduction`` (8).
        pam_weight, cam_weight: loss weights of the ``pam`` and ``cam`` outputs (1.0 each in
            mmsegmentation; ``out`` has 1.0). Unused with one branch.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        dropout: float = 0.1,
        in_index: int = -1,
        branches: DABranches = "pam+cam",
        reduction: int = 8,
        pam_weight: float = 1.0,
        cam_weight: float = 1.0,
        activation: Activation = "relu",
    ) -> None:
        super().__init__(in_channels, num_classes, channels, dropout, in_index, activation)
        if branches not in get_args(DABranches):
            raise ConfigError(f"DAHead: branches must be one of {get_args(DABranches)}, got {branches!r}")
        self.branches = branches
        self.pam = self.cam = None
        if "pam" in branches:
            self.pam_in = self.conv(self.in_channels, channels)
            self.pam = PositionAttention(channels, reduction=reduction)
            self.pam_out = self.conv(channels, channels)
        if "cam" in branches:
            self.cam_in = self.conv(self.in_channels, channels)
            self.cam = ChannelAttention()
            self.cam_out = self.conv(channels, channels)
        if self.pam is not None and self.cam is not None:
            self.add_branches({"pam": pam_weight, "cam": cam_weight})

    def context_with_branches(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        features = {}
        if self.pam is not None:
            features["pam"] = self.pam_out(self.pam(self.pam_in(x)))
        if self.cam is not None:
            features["cam"] = self.cam_out(self.cam(self.cam_in(x)))
        return sum(features.values()), features

    def attention_maps(self, x: Tensor, queries: Tensor) -> dict[str, Tensor]:
        """``{"pam": (B, Q, h, w)}``, the position attention of each query (sums to 1). The channel
        branch has no spatial map; a ``cam``-only head returns ``{}``."""
        if self.pam is None:
            return {}
        return {"pam": self.pam.attention_map(self.pam_in(x), queries)}
