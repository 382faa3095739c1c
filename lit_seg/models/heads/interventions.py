"""Heads that exist only as interventions of the task suite (docs/results.md): one paper's block in
another paper's head, to test a predicted cause. None is a published network. They live apart from
the papers' heads so that adding one never changes the code (and so the record's code hash) of a
head the suite has already run."""

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from lit_seg.models.attention.non_local import NonLocalMode
from lit_seg.models.heads.non_local import NonLocalHead
from lit_seg.models.layers import Activation


class NonLocalConcatHead(NonLocalHead):
    """Non-local's block in base-OC's head: 3x3 conv in -> the block's context ``BN(W y)``,
    without its residual -> concat with the conv output -> 1x1 fuse 2C -> C -> classifier.

    Base-OC's fusion (:class:`~lit_seg.models.heads.OCHead`, ``mode="base"``) around
    :class:`~lit_seg.models.attention.NonLocal2d`, in place of :class:`NonLocalHead`'s
    ``x + BN(W y)`` -> 3x3 conv out -> concat with the encoder map -> 3x3 fuse. ``BN(W y)`` starts
    at zero as base-OC's zero-initialised ``W`` does, so a fresh head adds no context either way.
    Takes :class:`NonLocalHead`'s arguments, and

    Args:
        w_batch_norm: BatchNorm (started at zero) after the block's output conv ``W``, as
            non-local; False: ``W`` a plain 1x1 conv with bias, started at zero, as base-OC's.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        dropout: float = 0.1,
        in_index: int = -1,
        reduction: int = 2,
        mode: NonLocalMode = "embedded_gaussian",
        sub_sample: bool = False,
        use_scale: bool = True,
        activation: Activation = "relu",
        share_key_query: bool = False,
        projection_init: Literal["mmcv", "pytorch"] = "mmcv",
        key_query_activation: Activation | None = None,
        w_batch_norm: bool = True,
    ) -> None:
        super().__init__(in_channels, num_classes, channels, dropout, in_index, reduction, mode, sub_sample,
                         use_scale, activation, share_key_query, projection_init, key_query_activation)
        del self.conv_out
        if not w_batch_norm:
            self.attention.W = nn.Conv2d(self.attention.inter_channels, channels, 1)
            nn.init.zeros_(self.attention.W.weight)
            nn.init.zeros_(self.attention.W.bias)
        self.fuse = self.conv(2 * channels, channels, kernel_size=1)

    def context(self, x: Tensor) -> Tensor:
        features = self.conv_in(x)
        context = self.attention.W(self.attention.context(features))
        return self.fuse(torch.cat([context, features], dim=1))
