"""Encoder + decode head (+ auxiliary head): a plain nn.Module, no Lightning."""

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from lit_seg.models.heads import DecodeHead, FCNHead

HeadFactory = Callable[[Sequence[int], int], DecodeHead]


class EncoderDecoder(nn.Module):
    """(B, 3, H, W) images -> dict of logits (B, num_classes, H, W) at the input resolution.

    Outputs: the head's (``out``, and e.g. DANet's branches) plus ``aux`` when an auxiliary
    FCN head is attached to the second-to-last encoder stage (layer3 of a ResNet), as in every
    anchor's recipe. :attr:`loss_weights` gives each output's weight in the loss.
    """

    def __init__(self, encoder: nn.Module, head: HeadFactory, num_classes: int,
                 aux_weight: float = 0.4, aux_channels: int = 256) -> None:
        super().__init__()
        self.encoder = encoder
        channels = list(encoder.out_channels)
        self.head = head(channels, num_classes)
        self.aux_weight = aux_weight
        self.aux_head = (
            FCNHead(channels, num_classes, channels=aux_channels, num_convs=1, concat_input=False, in_index=-2)
            if aux_weight > 0 else None
        )

    @property
    def loss_weights(self) -> dict[str, float]:
        weights = dict(self.head.loss_weights)
        if self.aux_head is not None:
            weights["aux"] = self.aux_weight
        return weights

    def forward(self, images: Tensor, upsample: bool = True) -> dict[str, Tensor]:
        features = self.encoder(images)
        outputs = self.head(features)
        if self.aux_head is not None and self.training:
            outputs["aux"] = self.aux_head(features)["out"]
        if upsample:
            outputs = {k: F.interpolate(v, size=images.shape[-2:], mode="bilinear", align_corners=False)
                       for k, v in outputs.items()}
        return outputs
