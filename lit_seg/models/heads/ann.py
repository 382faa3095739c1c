"""ANN head (Zhu et al., "Asymmetric Non-local Neural Networks for Semantic Segmentation", ICCV 2019),
as mmsegmentation's ``ANNHead``: it reads two encoder maps."""

from collections.abc import Sequence

from torch import Tensor

from lit_seg.models.attention import AsymmetricFusion, AsymmetricPyramid
from lit_seg.models.heads.base import DecodeHead
from lit_seg.models.layers import Activation


class ANNHead(DecodeHead):
    """AFNB(low, high) -> dropout -> 3x3 conv -> APNB -> classifier (dropout again before it, as mmseg).

    ``in_index`` names two maps, low-level then high-level (stages 3 and 4 of a ResNet, -2 and
    -1). AFNB (:class:`~lit_seg.models.attention.AsymmetricFusion`) lets every position of the
    high-level map attend to the low-level map's keys and values, pyramid-pooled to
    ``sum s^2`` positions (110 for 1, 3, 6, 8), and fuses the result with the high-level map at
    its width; a 3x3 conv brings it to ``channels``; APNB
    (:class:`~lit_seg.models.attention.AsymmetricPyramid`) is the same attention within that
    map. Both attentions' output convs start at zero, so a fresh head has no attention context.
    The low-level map may have another size than the high-level one (its keys are pooled to
    fixed grids); the output has the high-level map's size.

    Args:
        in_index: the (low, high) maps; (-2, -1), mmseg's (2, 3).
        project_channels: width of the queries, keys and values; None: ``channels // 2`` (mmseg: 256).
        key_pool_scales: the grids the keys and values are pooled to, (1, 3, 6, 8).
    """

    num_inputs = 2

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        dropout: float = 0.1,
        in_index: Sequence[int] = (-2, -1),
        project_channels: int | None = None,
        key_pool_scales: Sequence[int] = (1, 3, 6, 8),
        activation: Activation = "relu",
    ) -> None:
        super().__init__(in_channels, num_classes, channels, dropout, in_index, activation)
        low, high = self.in_channels
        project_channels = project_channels or max(channels // 2, 1)
        self.key_pool_scales = tuple(key_pool_scales)
        self.fusion = AsymmetricFusion(low, high, key_channels=project_channels, pool_scales=self.key_pool_scales,
                                       activation=activation)
        self.bottleneck = self.conv(high, channels)
        self.pyramid = AsymmetricPyramid(channels, key_channels=project_channels, pool_scales=self.key_pool_scales,
                                         activation=activation)

    def context(self, x: Sequence[Tensor]) -> Tensor:
        low, high = x
        return self.pyramid(self.bottleneck(self.dropout(self.fusion(low, high))))

    def attention_maps(self, x: Sequence[Tensor], queries: Tensor) -> dict[str, Tensor]:
        """Softmax weights of each query (a position of the high-level map) over the pooled keys,
        spread over the positions each key averages (each map sums to 1):

        - ``afnb``: over the low-level map, (B, Q, h_low, w_low);
        - ``apnb``: over the head's own map after AFNB and the 3x3 conv, (B, Q, h, w).

        Call ``eval()`` first (the trained BatchNorm statistics, no dropout).
        """
        low, high = x
        fused = self.bottleneck(self.dropout(self.fusion(low, high)))
        return {"afnb": self.fusion.attention.attention_map(high, low, queries),
                "apnb": self.pyramid.attention.attention_map(fused, fused, queries)}
