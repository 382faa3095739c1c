"""Context operators: plain ``nn.Module``s mapping (B, C, H, W) features to context features.

One constructor style: ``Operator(channels, *, <width: reduction / key_channels / ratio>,
<mode options>, activation=...)``, the channel count the only positional argument, the defaults
the paper's (``ChannelAttention`` has no weights but its scale and takes no arguments,
``SpatialGather`` none at all). ANN's blocks read two maps:
``PyramidKeyAttention(key_in_channels, query_channels, out_channels, ...)`` and
``AsymmetricFusion(low_channels, high_channels, ...)``.
"""

from lit_seg.models.attention.asymmetric_non_local import AsymmetricFusion, AsymmetricPyramid, PyramidKeyAttention
from lit_seg.models.attention.criss_cross import CrissCrossAttention
from lit_seg.models.attention.disentangled_non_local import DisentangledNonLocal2d
from lit_seg.models.attention.dual_attention import ChannelAttention, PositionAttention
from lit_seg.models.attention.expectation_maximization import ExpectationMaximizationAttention
from lit_seg.models.attention.global_context import GlobalContextBlock
from lit_seg.models.attention.hamburger import Hamburger
from lit_seg.models.attention.interlaced_sparse_attention import GroupedSelfAttention, InterlacedSparseAttention
from lit_seg.models.attention.matrix_decomposition import NMF2d
from lit_seg.models.attention.non_local import NonLocal2d
from lit_seg.models.attention.object_attention import ObjectAttention
from lit_seg.models.attention.self_attention import SelfAttention2d
from lit_seg.models.attention.spatial_gather import SpatialGather

__all__ = [
    "AsymmetricFusion",
    "AsymmetricPyramid",
    "ChannelAttention",
    "CrissCrossAttention",
    "DisentangledNonLocal2d",
    "ExpectationMaximizationAttention",
    "GlobalContextBlock",
    "GroupedSelfAttention",
    "Hamburger",
    "InterlacedSparseAttention",
    "NMF2d",
    "NonLocal2d",
    "ObjectAttention",
    "PositionAttention",
    "PyramidKeyAttention",
    "SelfAttention2d",
    "SpatialGather",
]
