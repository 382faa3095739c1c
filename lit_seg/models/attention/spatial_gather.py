"""OCR's spatial gather (Yuan, Chen, Wang, "Object-Contextual Representations for Semantic
Segmentation", ECCV 2020, arXiv:1909.11065): one representation per soft object region."""

from torch import Tensor, nn


class SpatialGather(nn.Module):
    """Object region representations: the features averaged over each soft object region.

    ``region_logits`` (B, K, H, W) is a coarse segmentation (OCR's first-stage prediction, one
    region per class); a softmax over the H*W positions turns each class's logits into spatial
    weights, and region k is the weighted sum of the pixel features (B, C, H, W):
    ``f_k = sum_p softmax_p(l_k)[p] x_p``. Output (B, C, K, 1), a K x 1 "map" so that the
    1x1 conv-BN projections of :class:`~lit_seg.models.attention.ObjectAttention` apply to it
    directly (mmsegmentation's ``SpatialGatherModule``, openseg's ``SpatialGather_Module``,
    their ``scale`` 1). No weights.
    """

    @staticmethod
    def region_weights(region_logits: Tensor) -> Tensor:
        """(B, K, H, W) logits -> (B, K, H, W) spatial weights, each region's summing to 1 over H*W."""
        return region_logits.flatten(2).softmax(dim=-1).view_as(region_logits)

    def forward(self, x: Tensor, region_logits: Tensor) -> Tensor:
        if x.shape[-2:] != region_logits.shape[-2:] or x.shape[0] != region_logits.shape[0]:
            raise ValueError(f"SpatialGather: features {tuple(x.shape)} and region logits "
                             f"{tuple(region_logits.shape)} must share batch and size")
        weights = self.region_weights(region_logits).flatten(2)  # (B, K, N)
        regions = x.flatten(2) @ weights.transpose(1, 2)  # (B, C, K)
        return regions.unsqueeze(-1)
