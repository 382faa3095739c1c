"""DNL head (Yin et al., "Disentangled Non-Local Neural Networks", ECCV 2020), as mmsegmentation's ``DNLHead``."""

from collections.abc import Sequence

from torch import Tensor

from lit_seg.models.attention import DisentangledNonLocal2d
from lit_seg.models.heads.base import ContextHead
from lit_seg.models.layers import Activation


class DNLHead(ContextHead):
    """3x3 conv in -> disentangled non-local block -> 3x3 conv out -> concat with the input -> 3x3 fuse -> classifier.

    Args:
        reduction: theta/phi/g have ``channels // reduction`` channels (2).
        use_scale: divide the pairwise logits by sqrt(channels // reduction) (mmseg: on).
        temperature: of the whitened pairwise softmax (0.05, the paper's and mmseg's).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        dropout: float = 0.1,
        in_index: int = -1,
        reduction: int = 2,
        use_scale: bool = True,
        temperature: float = 0.05,
        activation: Activation = "relu",
    ) -> None:
        super().__init__(in_channels, num_classes, channels, dropout, in_index, activation,
                         lambda c: DisentangledNonLocal2d(c, reduction=reduction, use_scale=use_scale,
                                                          temperature=temperature))

    def attention_maps(self, x: Tensor, queries: Tensor) -> dict[str, Tensor]:
        """``{"pairwise": (B, Q, h, w), "unary": (B, Q, h, w)}``: each query's whitened pairwise
        weights, and the unary map (the same for every query); each sums to 1."""
        y = self.conv_in(x)
        unary = self.attention.unary_map(y).expand(-1, queries.shape[0], -1, -1)
        return {"pairwise": self.attention.attention_map(y, queries), "unary": unary}
