"""The scaffold every decode head shares."""

from collections.abc import Sequence

from torch import Tensor, nn


class DecodeHead(nn.Module):
    """Picks one encoder feature map, computes context features, classifies them.

    Subclasses build their layers in ``__init__`` and implement :meth:`context`, mapping the
    selected feature map (B, ``self.in_channels``, h, w) to (B, ``channels``, h, w). Heads with
    several outputs (DANet) override :meth:`forward` and :attr:`loss_weights`.

    Args:
        in_channels: channels of every encoder feature map, shallow to deep (smp's
            ``encoder.out_channels``).
        num_classes: number of classes.
        channels: width of the head (512 in mmsegmentation's recipe).
        dropout: dropout before the classifier (0.1 in the recipe).
        in_index: which feature map to use; -1 is the deepest.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        dropout: float = 0.1,
        in_index: int = -1,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels[in_index]
        self.channels = channels
        self.num_classes = num_classes
        self.in_index = in_index
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    @property
    def loss_weights(self) -> dict[str, float]:
        """Weight of each output of :meth:`forward` in the training loss."""
        return {"out": 1.0}

    def context(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def attention_maps(self, x: Tensor, queries: Tensor) -> dict[str, Tensor]:
        """Attention weights of chosen query positions, for visualisation.

        ``x`` is the head's input (B, ``in_channels``, h, w), ``queries`` a long tensor (Q, 2) of
        (row, col) in that resolution. Returns named maps of shape (B, Q, h', w') (e.g. one per
        recurrence step and their composition), computed for the queries only. Heads without
        attention return ``{}``.
        """
        return {}

    def classify(self, features: Tensor) -> Tensor:
        return self.classifier(self.dropout(features))

    def forward(self, features: Sequence[Tensor]) -> dict[str, Tensor]:
        """Encoder features -> ``{"out": logits}``, logits (B, num_classes, h, w) at the feature resolution."""
        return {"out": self.classify(self.context(features[self.in_index]))}
