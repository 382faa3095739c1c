"""Segmentation losses: cross-entropy with optional class weights, and OHEM cross-entropy."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_seg.errors import ConfigError


def masked_cross_entropy(logits: Tensor, target: Tensor, weight: Tensor | None = None,
                         ignore_index: int = 255) -> Tensor:
    """``F.cross_entropy``'s (weighted) mean over the labelled pixels, but 0 when there are none.

    PyTorch's mean divides by the labelled pixels' total weight: a batch whose masks are all
    ``ignore_index`` (partly annotated data sets have such images) gives 0 / 0 = NaN, which would
    stop the run. Here such a batch contributes a zero loss that is still part of the graph
    (backward gives zero gradients), as mmseg's ``avg_non_ignore``; otherwise the value is
    PyTorch's. No host sync: the count stays a tensor.
    """
    total = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction="sum")
    valid = target != ignore_index
    if weight is None:
        denominator = valid.sum().to(total.dtype)
    else:
        denominator = (weight[target.masked_fill(~valid, 0)] * valid).sum().to(total.dtype)
    # Dividing by 1 where nothing counts keeps the zero sum (and its zero gradient) finite.
    return total / torch.where(denominator > 0, denominator, torch.ones_like(denominator))


class CrossEntropy(nn.Module):
    """``F.cross_entropy`` with ``ignore_index`` and optional per-class weights (PyTorch's
    weighted mean: the sum of weighted pixel losses over the sum of the pixels' class weights);
    a batch without labelled pixels gives 0, not NaN (:func:`masked_cross_entropy`)."""

    def __init__(self, ignore_index: int = 255, class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        weight = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weight, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        weight = None if self.class_weights is None else self.class_weights.to(logits.dtype)
        return masked_cross_entropy(logits, target, weight, self.ignore_index)


class OhemCrossEntropy(CrossEntropy):
    """Online hard example mining as mmsegmentation's ``OHEMPixelSampler`` (with ``thresh``).

    Among the labelled pixels (label != ``ignore_index``), those whose predicted probability of
    their true class is below ``thresh`` are kept; when fewer than ``min_kept`` per image would
    be kept, the threshold rises to the probability of the ``min_kept * batch``-th easiest-hard
    pixel, so at least that many are (as mmseg: ``batch_kept = min_kept * batch_size``, and
    ``threshold = max(sorted_probs[min(batch_kept, n_valid - 1)], thresh)``; pixels tying that
    probability are not kept). Selection runs without gradient.

    The loss is the cross-entropy (class-weighted if ``class_weights``) averaged over the kept
    pixels, i.e. ``F.cross_entropy`` with every pixel not kept set to ``ignore_index``. (mmseg
    1.x multiplies by the 0/1 mask and divides by the count of *labelled* pixels instead, which
    scales the loss by the kept fraction; the choice of pixels is identical.)
    """

    def __init__(self, thresh: float = 0.7, min_kept: int = 100_000, ignore_index: int = 255,
                 class_weights: Sequence[float] | None = None) -> None:
        super().__init__(ignore_index, class_weights)
        if not 0.0 < thresh <= 1.0:
            raise ConfigError(f"OhemCrossEntropy: thresh must be in (0, 1], got {thresh}")
        if min_kept < 0:
            raise ConfigError(f"OhemCrossEntropy: min_kept must be >= 0, got {min_kept}")
        self.thresh = thresh
        self.min_kept = min_kept

    @torch.no_grad()
    def kept(self, logits: Tensor, target: Tensor) -> Tensor:
        """Boolean (B, H, W): the pixels the loss is computed on."""
        valid = target != self.ignore_index
        probs = logits.float().softmax(dim=1)
        true_prob = probs.gather(1, target.masked_fill(~valid, 0).unsqueeze(1)).squeeze(1)
        valid_probs = true_prob[valid]
        if valid_probs.numel() == 0:
            return valid
        batch_kept = self.min_kept * target.shape[0]
        sorted_probs = valid_probs.sort().values
        threshold = max(sorted_probs[min(batch_kept, sorted_probs.numel() - 1)].item(), self.thresh)
        return valid & (true_prob < threshold)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        kept = self.kept(logits, target)
        if not kept.any():  # nothing labelled (or nothing hard): no gradient, not NaN
            return logits.sum() * 0.0
        return super().forward(logits, target.masked_fill(~kept, self.ignore_index))
