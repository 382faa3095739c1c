"""DANet head (Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019), as
mmsegmentation's ``DAHead`` and the seed's ``_DAHead``."""

from collections.abc import Sequence
from typing import Literal, get_args

from torch import Tensor, nn

from lit_seg.errors import ConfigError
from lit_seg.models.attention import ChannelAttention, PositionAttention
from lit_seg.models.heads.base import DecodeHead
from lit_seg.models.layers import ConvNormAct

DABranches = Literal["pam+cam", "pam", "cam"]


class DAHead(DecodeHead):
    """Two parallel branches on the input, summed, then the classifier.

    Position branch: 3x3 conv -> position attention (PAM) -> 3x3 conv; channel branch:
    3x3 conv -> channel attention (CAM) -> 3x3 conv; both ``channels`` wide (the seed uses
    ``in_channels // 4``, mmsegmentation the head width). With both branches the head has three
    outputs, each with its own dropout + 1x1 classifier and loss (as the paper and mmseg):
    ``out`` (the sum), ``pam`` and ``cam`` (in training). With one branch only ``out``.

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
    ) -> None:
        super().__init__(in_channels, num_classes, channels, dropout, in_index)
        if branches not in get_args(DABranches):
            raise ConfigError(f"DAHead: branches must be one of {get_args(DABranches)}, got {branches!r}")
        self.branches = branches
        self.pam_weight = pam_weight
        self.cam_weight = cam_weight
        self.pam = self.cam = None
        if "pam" in branches:
            self.pam_in = ConvNormAct(self.in_channels, channels)
            self.pam = PositionAttention(channels, reduction)
            self.pam_out = ConvNormAct(channels, channels)
        if "cam" in branches:
            self.cam_in = ConvNormAct(self.in_channels, channels)
            self.cam = ChannelAttention()
            self.cam_out = ConvNormAct(channels, channels)
        self.both = self.pam is not None and self.cam is not None
        if self.both:
            self.pam_classifier = nn.Conv2d(channels, num_classes, 1)
            self.cam_classifier = nn.Conv2d(channels, num_classes, 1)

    @property
    def loss_weights(self) -> dict[str, float]:
        if self.both:
            return {"out": 1.0, "pam": self.pam_weight, "cam": self.cam_weight}
        return {"out": 1.0}

    def _branches(self, x: Tensor) -> tuple[Tensor | None, Tensor | None]:
        pam = self.pam_out(self.pam(self.pam_in(x))) if self.pam is not None else None
        cam = self.cam_out(self.cam(self.cam_in(x))) if self.cam is not None else None
        return pam, cam

    def context(self, x: Tensor) -> Tensor:
        pam, cam = self._branches(x)
        return pam + cam if self.both else (pam if pam is not None else cam)

    def forward(self, features: Sequence[Tensor]) -> dict[str, Tensor]:
        """``{"out", "pam", "cam"}`` logits with both branches in training, else ``{"out"}``.

        The branch outputs only feed their losses, so evaluation skips them (as mmsegmentation).
        """
        pam, cam = self._branches(features[self.in_index])
        if not self.both or not self.training:
            return {"out": self.classify(pam if pam is not None else cam)}
        return {
            "out": self.classify(pam + cam),
            "pam": self.pam_classifier(self.dropout(pam)),
            "cam": self.cam_classifier(self.dropout(cam)),
        }

    def attention_maps(self, x: Tensor, queries: Tensor) -> dict[str, Tensor]:
        """``{"pam": (B, Q, h, w)}``, the position attention of each query (sums to 1). The channel
        branch has no spatial map; a ``cam``-only head returns ``{}``."""
        if self.pam is None:
            return {}
        return {"pam": self.pam.attention_map(self.pam_in(x), queries)}
