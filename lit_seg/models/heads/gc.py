"""GCNet head (Cao et al., "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
ICCVW 2019), as mmsegmentation's ``GCHead``. For GC blocks inside the encoder, see
:func:`lit_seg.models.gc_backbone.insert_global_context`."""

from collections.abc import Sequence

from torch import Tensor

from lit_seg.models.attention import GlobalContextBlock
from lit_seg.models.attention.functional import query_positions
from lit_seg.models.attention.global_context import GCFusion, GCPooling
from lit_seg.models.heads.base import ContextHead
from lit_seg.models.layers import Activation


class GCHead(ContextHead):
    """3x3 conv in -> global context block -> 3x3 conv out -> concat with the input -> 3x3 fuse -> classifier.

    The block is :class:`~lit_seg.models.attention.GlobalContextBlock`: one softmax pooling map
    per image, a context vector through a bottleneck (1x1 -> LayerNorm -> ReLU -> 1x1, last conv
    zero-initialised) fused into every position.

    Args:
        ratio: bottleneck width ``channels * ratio``; 1/4 in mmsegmentation's ``GCHead`` (the
            paper's backbone blocks use 1/16).
        pooling: ``att`` (softmax attention pooling, the paper's) or ``avg`` (SE-like).
        fusion: ``("add",)`` (the paper's best), ``("mul",)`` or both.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        dropout: float = 0.1,
        in_index: int = -1,
        ratio: float = 1 / 4,
        pooling: GCPooling = "att",
        fusion: Sequence[GCFusion] = ("add",),
        activation: Activation = "relu",
    ) -> None:
        super().__init__(in_channels, num_classes, channels, dropout, in_index, activation,
                         lambda c: GlobalContextBlock(c, ratio=ratio, pooling=pooling, fusion=fusion))

    def attention_maps(self, x: Tensor, queries: Tensor) -> dict[str, Tensor]:
        """``{"gc": (B, Q, h, w)}``: the block's one pooling map (sums to 1), the same for every query."""
        y = self.conv_in(x)
        query_positions(queries, y)  # checks the queries
        return {"gc": self.attention.attention_map(y).expand(-1, queries.shape[0], -1, -1)}
