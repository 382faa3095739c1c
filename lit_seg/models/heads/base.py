"""The scaffold every decode head shares: :class:`DecodeHead`, and :class:`ContextHead` for the
conv in -> context block -> conv out -> concat -> fuse pattern of the non-local, CCNet, GCNet and
DNL heads."""

from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from lit_seg.errors import ConfigError
from lit_seg.models.layers import Activation, ConvNormAct


class DecodeHead(nn.Module):
    """Picks one encoder feature map, computes context features, classifies them.

    Subclasses build their layers in ``__init__`` and implement :meth:`context`, mapping the
    selected feature map (B, ``self.in_channels``, h, w) to (B, ``channels``, h, w). A head with
    extra training outputs (DANet's branch losses) implements :meth:`context_with_branches`
    instead and registers a classifier and a loss weight per branch with :meth:`add_branches`.
    A cascade head (OCR: a first stage's prediction feeds the second) returns the first stage's
    logits as a branch registered with :meth:`add_branch_logits`: computed once, used in every
    mode, loss-weighted in training.

    A head that reads several encoder maps (ANN: stages 3 and 4) sets the class attribute
    :attr:`num_inputs`; its ``in_index`` is then a sequence of that many indices, ``in_channels``
    the tuple of their channels, and :meth:`context` and :meth:`attention_maps` get the list of
    maps (:meth:`select_inputs`). Its output, and its attention queries, are at the resolution of
    the last of them (:meth:`query_size`).

    :meth:`forward` is final: the output ``out`` is ``classify(fused features)`` in every mode,
    computed in one place, so evaluation cannot drift from what training optimised. Training
    adds the branch outputs; evaluation skips only their classifiers.

    Args:
        in_channels: channels of every encoder feature map, shallow to deep (smp's
            ``encoder.out_channels``).
        num_classes: number of classes (from the data set).
        channels: width of the head (512 in mmsegmentation's recipe).
        dropout: dropout before the classifier (0.1 in the recipe).
        in_index: which feature map to use; -1 is the deepest. A sequence of indices for a head
            that reads several maps (:attr:`num_inputs`).
        activation: after every BatchNorm of the head's convs: ``relu`` (mmsegmentation, the
            recipe) or ``leaky_relu`` (slope 0.01: InPlaceABN, the official OCNet and CCNet code).
    """

    #: How many encoder maps the head reads: 1 (``in_index`` an int), or more (a sequence of as many).
    num_inputs: ClassVar[int] = 1

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        dropout: float = 0.1,
        in_index: int | Sequence[int] = -1,
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if self.num_inputs == 1:
            if not isinstance(in_index, int):
                raise ConfigError(f"{name} reads one encoder map: in_index must be an integer, got {in_index!r}")
        else:
            if isinstance(in_index, int) or len(in_index) != self.num_inputs:
                raise ConfigError(f"{name} reads {self.num_inputs} encoder maps: in_index must list "
                                  f"{self.num_inputs} indices, got {in_index!r}")
            in_index = tuple(in_index)
        indices = (in_index,) if isinstance(in_index, int) else in_index
        if not all(-len(in_channels) <= i < len(in_channels) for i in indices):
            raise ConfigError(f"{name}: in_index {in_index} names no map of the encoder's {len(in_channels)} "
                              f"feature maps (-1: the deepest, -2: the one before it)")
        self.in_channels = (in_channels[in_index] if isinstance(in_index, int)
                            else tuple(in_channels[i] for i in in_index))
        self.channels = channels
        self.num_classes = num_classes
        self.in_index = in_index
        self.activation = activation
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.branch_classifiers = nn.ModuleDict()
        self.branch_weights: dict[str, float] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "forward" in vars(cls):
            raise TypeError(f"{cls.__name__} overrides DecodeHead.forward; implement context() "
                            "(or context_with_branches() for extra training outputs) instead")

    def conv(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1, *,
             act: bool = True) -> ConvNormAct:
        """A conv-BN-activation layer with the head's activation (``act=False``: BatchNorm only)."""
        return ConvNormAct(in_channels, out_channels, kernel_size, dilation,
                           activation=self.activation if act else None)

    def add_branches(self, weights: Mapping[str, float]) -> None:
        """Extra training outputs, each a dropout + 1x1 classifier on its branch features and its loss weight."""
        for name, weight in weights.items():
            self.branch_classifiers[name] = nn.Conv2d(self.channels, self.num_classes, 1)
            self.branch_weights[name] = weight

    def add_branch_logits(self, weights: Mapping[str, float]) -> None:
        """Extra training outputs that :meth:`context_with_branches` returns as logits already (a
        cascade's first-stage prediction, which the head itself needs in every mode): loss weights
        only, no classifier."""
        self.branch_weights.update(weights)

    @property
    def loss_weights(self) -> dict[str, float]:
        """Weight of each training output of :meth:`forward` in the loss."""
        return {"out": 1.0, **self.branch_weights}

    def context(self, x: Tensor) -> Tensor:
        """(B, in_channels, h, w) -> fused context features (B, channels, h, w)."""
        raise NotImplementedError

    def context_with_branches(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Fused features and the features of each branch named in :meth:`add_branches` (the logits
        of each named in :meth:`add_branch_logits`)."""
        return self.context(x), {}

    def attention_maps(self, x: Tensor, queries: Tensor) -> dict[str, Tensor]:
        """Attention weights of chosen query positions, for visualisation.

        ``x`` is the head's input (B, ``in_channels``, h, w) (for a head of several maps, the
        list :meth:`select_inputs` gives), ``queries`` a long tensor (Q, 2) of (row, col) at
        :meth:`query_size`. Returns named maps of shape (B, Q, h', w') (e.g. one per recurrence
        step and their composition), computed for the queries only. Heads without attention
        return ``{}``.
        """
        return {}

    def select_inputs(self, features: Sequence[Tensor]) -> Tensor | list[Tensor]:
        """The head's input among the encoder features: ``features[in_index]``, or the list of the
        maps ``in_index`` names for a head of several maps."""
        if self.num_inputs == 1:
            return features[self.in_index]
        return [features[i] for i in self.in_index]

    @staticmethod
    def query_size(x: Tensor | Sequence[Tensor]) -> tuple[int, int]:
        """(h, w) of the head's output and of its attention queries, for the input ``x`` of
        :meth:`select_inputs`: its map, or the last of several."""
        return tuple((x if isinstance(x, Tensor) else x[-1]).shape[-2:])

    def classify(self, features: Tensor) -> Tensor:
        return self.classifier(self.dropout(features))

    def forward(self, features: Sequence[Tensor]) -> dict[str, Tensor]:
        """Encoder features -> ``{"out": logits}`` (plus the branch logits in training), each
        (B, num_classes, h, w) at the feature resolution."""
        fused, branches = self.context_with_branches(self.select_inputs(features))
        outputs = {"out": self.classify(fused)}
        if self.training:
            for name in self.branch_weights:
                if name in self.branch_classifiers:
                    outputs[name] = self.branch_classifiers[name](self.dropout(branches[name]))
                else:  # logits already (add_branch_logits)
                    outputs[name] = branches[name]
        return outputs


class ContextHead(DecodeHead):
    """3x3 conv in -> context block -> 3x3 conv out -> concat with the input -> 3x3 fuse -> classifier.

    mmsegmentation's ``FCNHead(num_convs=2, concat_input=True)`` with a block between its two
    convs: the layout of its ``NLHead``, ``CCHead``, ``GCHead`` and ``DNLHead`` (and of the
    official CCNet's RCCA module). ``block`` builds the block for ``channels`` channels;
    :meth:`apply_block` runs it (CCNet overrides it to apply the block R times).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int,
        dropout: float,
        in_index: int,
        activation: Activation,
        block: Callable[[int], nn.Module],
    ) -> None:
        super().__init__(in_channels, num_classes, channels, dropout, in_index, activation)
        self.conv_in = self.conv(self.in_channels, channels)
        self.attention = block(channels)
        self.conv_out = self.conv(channels, channels)
        self.fuse = self.conv(self.in_channels + channels, channels)

    def apply_block(self, y: Tensor) -> Tensor:
        return self.attention(y)

    def context(self, x: Tensor) -> Tensor:
        y = self.conv_out(self.apply_block(self.conv_in(x)))
        return self.fuse(torch.cat([x, y], dim=1))
