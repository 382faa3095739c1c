"""Non-local head (Wang et al., "Non-local Neural Networks", CVPR 2018), as mmsegmentation's ``NLHead``."""

from collections.abc import Sequence
from typing import Literal

from torch import Tensor

from lit_seg.models.attention import NonLocal2d
from lit_seg.models.attention.non_local import NonLocalMode
from lit_seg.models.heads.base import ContextHead
from lit_seg.models.layers import Activation


class NonLocalHead(ContextHead):
    """3x3 conv in -> non-local block -> 3x3 conv out -> concat with the input -> 3x3 fuse -> classifier.

    The block is :class:`~lit_seg.models.attention.NonLocal2d` (residual, zero-initialised W, so
    a fresh head equals the FCN baseline with two convs).

    Args:
        reduction: theta/phi/g have ``channels // reduction`` channels (2, as in the paper).
        mode: the pairwise function: ``embedded_gaussian`` (default), ``gaussian``,
            ``dot_product`` or ``concatenation``.
        sub_sample: max-pool keys and values by 2 (mmsegmentation's default: off).
        use_scale: divide the embedded-Gaussian logits by sqrt(channels // reduction) (mmseg: on).
        share_key_query, projection_init, key_query_activation: the block's options that give it
            OCNet's query/key projection (one module for both), initialisation (PyTorch's default)
            and BatchNorm + activation after it; off, mmcv's and none in the paper's network
            (:class:`~lit_seg.models.attention.NonLocal2d`).
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
    ) -> None:
        super().__init__(in_channels, num_classes, channels, dropout, in_index, activation,
                         lambda c: NonLocal2d(c, reduction=reduction, mode=mode, sub_sample=sub_sample,
                                              use_scale=use_scale, share_key_query=share_key_query,
                                              projection_init=projection_init,
                                              key_query_activation=key_query_activation))

    def attention_maps(self, x: Tensor, queries: Tensor) -> dict[str, Tensor]:
        """``{"nonlocal": (B, Q, h', w')}``: the block's pairwise weights of each query over the keys
        ((h, w), or (h // 2, w // 2) with ``sub_sample``); they sum to 1 in the softmax modes."""
        return {"nonlocal": self.attention.attention_map(self.conv_in(x), queries)}
