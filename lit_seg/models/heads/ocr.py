"""OCR head (Yuan, Chen, Wang, "Object-Contextual Representations for Semantic Segmentation",
ECCV 2020, arXiv:1909.11065), as mmsegmentation's OCRNet (``ocrnet_r50-d8``: an ``FCNHead`` on
stage 3 cascaded into ``OCRHead``) and openseg's ``SpatialOCR_Module``."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_seg.models.attention import ObjectAttention, SpatialGather
from lit_seg.models.attention.functional import query_positions
from lit_seg.models.heads.base import DecodeHead
from lit_seg.models.heads.fcn import FCNHead
from lit_seg.models.layers import Activation


class OCRHead(DecodeHead):
    """Soft object regions from a first stage, then object-contextual representations.

    The head reads two encoder maps, ``in_index = (stage 3, stage 4)`` (:attr:`num_inputs`): the
    first stage's and the second's.

    1. ``regions``, the first stage (mmseg's first ``FCNHead`` of the cascade): on the encoder map
       ``in_index[0]`` (stage 3, layer3 of a ResNet), one 3x3 conv-BN-act to
       ``regions_channels``, dropout, a 1x1 classifier: K = num_classes region logits. They are a
       training output of their own (``regions``, loss weight ``regions_weight``, 0.4) and the
       soft object regions of step 3, in training and in evaluation alike: computed once per
       forward (mmseg's ``CascadeEncoderDecoder`` runs this stage twice in training, once for its
       loss and once more for the second head, with two dropout draws).
    2. ``bottleneck``: 3x3 conv-BN-act on ``features[in_index[1]]`` (stage 4), in -> C.
    3. :class:`~lit_seg.models.attention.SpatialGather`: K region representations (B, C, K, 1).
    4. :class:`~lit_seg.models.attention.ObjectAttention` (query/key two conv-BN-act layers,
       value and output one each, width ``ocr_channels``; fusion 1x1 2C -> C), dropout, classifier.

    This head owns its first stage, so an OCR model has no separate auxiliary head: the
    experiments set ``model.aux_weight: 0`` (``experiments/heads/ocr.yaml``), as mmseg's OCRNet
    has none. When the two maps differ in size (not in a D8 ResNet, where stages 3 and 4 are
    both at stride 8), the region logits are resized bilinearly to the stage-4 size, and that
    resized prediction is also the ``regions`` output.

    Args:
        in_index: the encoder maps of the first and the second stage; (-2, -1) (stages 3 and 4) as
            mmseg. (-1, -1) puts both stages on the same map, the layout of HRNet-OCR (the
            official HRNet + OCR network).
        ocr_channels: key/query/value width of the object attention; None: C/2 (the recipe's 256
            at C = 512).
        regions_channels: width of the first stage; None: C/2 (the recipe's 256 at C = 512).
        regions_weight: loss weight of the first stage's prediction (0.4).
        dropout: before each of the two classifiers (0.1 in both, as mmseg).
    """

    num_inputs = 2

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        dropout: float = 0.1,
        in_index: Sequence[int] = (-2, -1),
        ocr_channels: int | None = None,
        regions_channels: int | None = None,
        regions_weight: float = 0.4,
        activation: Activation = "relu",
    ) -> None:
        super().__init__(in_channels, num_classes, channels, dropout, in_index, activation)
        half = max(channels // 2, 1)
        self.regions = FCNHead(in_channels, num_classes, channels=regions_channels or half, dropout=dropout,
                               in_index=self.in_index[0], num_convs=1, concat_input=False, activation=activation)
        self.bottleneck = self.conv(self.in_channels[1], channels)
        self.gather = SpatialGather()
        self.object_attention = ObjectAttention(channels, key_channels=ocr_channels or half, activation=activation)
        self.add_branch_logits({"regions": regions_weight})

    def region_logits(self, regions_input: Tensor, size: Sequence[int]) -> Tensor:
        """The first stage's prediction (B, K, h, w) at the stage-4 size ``size``."""
        logits = self.regions.classify(self.regions.context(regions_input))
        if tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
        return logits

    def context_with_branches(self, x: Sequence[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        regions_input, x = x
        feats = self.bottleneck(x)
        logits = self.region_logits(regions_input, feats.shape[-2:])
        return self.object_attention(feats, self.gather(feats, logits)), {"regions": logits}

    def pixel_region_weights(self, x: Sequence[Tensor], queries: Tensor) -> tuple[Tensor, Tensor]:
        """The query pixels' weights over the K object regions (B, Q, K), each row summing to 1, and
        the regions' spatial weights (B, K, h, w) (:meth:`SpatialGather.region_weights`); ``x``:
        the two maps (:meth:`select_inputs`)."""
        regions_input, x = x
        feats = self.bottleneck(x)
        rows, cols = query_positions(queries, feats)
        logits = self.region_logits(regions_input, feats.shape[-2:])
        relation = self.object_attention.relation(feats, self.gather(feats, logits))  # (B, N, K)
        return relation[:, rows * feats.shape[-1] + cols], self.gather.region_weights(logits)

    def attention_maps(self, x: Sequence[Tensor], queries: Tensor) -> dict[str, Tensor]:
        """``{"ocr": (B, Q, h, w)}``: each query's pixel-region weights composed back to image
        positions through the soft regions, ``sum_k w[q, k] softmax_p(l_k)[p]``: the weight
        with which the query's object context draws on each pixel's features (before the
        value and output projections, which mix channels). Sums to 1. The weights over the K
        regions themselves are :meth:`pixel_region_weights`. Call ``eval()`` first."""
        relation, region_weights = self.pixel_region_weights(x, queries)
        return {"ocr": torch.einsum("bqk,bkhw->bqhw", relation, region_weights)}
