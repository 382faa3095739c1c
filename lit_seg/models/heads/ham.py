"""HamNet head (Geng et al., "Is Attention Better Than Matrix Decomposition?", ICLR 2021): the
authors' head for a ResNet at output stride 8 (Gsunshine/Enjoy-Hamburger ``seg_mm``: ``HamHead``,
``configs/_base_/models/ham_r50-d8.py``), with the paper's one-step gradient."""

from collections.abc import Sequence

import torch
from torch import Tensor

from lit_seg.models.attention import Hamburger
from lit_seg.models.heads.base import DecodeHead
from lit_seg.models.layers import Activation, ConvNormAct, Norm


class HamHead(DecodeHead):
    """3x3 squeeze -> Hamburger (NMF) -> 3x3 align -> concat with the input -> 3x3 fuse -> classifier.

    The authors' ResNet-D8 head reads stage 4 alone (``in_index=3``): squeeze 2048 -> 512, the
    Hamburger (:class:`~lit_seg.models.attention.Hamburger`: 1x1 + ReLU, NMF with 64 bases,
    1x1 + norm, residual, ReLU), align 512 -> 512, and ``concat_input`` as mmseg's FCN-style
    heads; every norm of the head is GroupNorm with 32 groups there (``ham_norm_cfg``). (mmseg's
    ``LightHamHead`` is the SegNeXt variant: 1x1 squeeze of three concatenated stages, no concat.)

    Deviations (README): the NMF starts from the same fixed bases in training and evaluation
    (the reference draws random ones every forward) and runs ``steps`` updates in both (the
    authors' mmseg port: 6 in training, 7 in evaluation), so that evaluation returns what
    training optimised.

    Args:
        ham_channels: width of the Hamburger (the NMF's dimension D); None: ``channels``.
        rank: R, the number of NMF bases (64, with D = 512).
        steps: multiplicative updates per forward, without gradient (6); then one more update of
            the coefficients with gradient.
        one_step_gradient: the paper's gradient through the last update only (True), or through
            every update (False: mmseg's ``LightHamHead``).
        norm: ``group`` (the authors' ResNet-D8 config, 32 groups) or ``batch`` (their first
            release, ``seg/HamNet``), for every norm of the head.
        concat_input: fuse the head's input with the aligned features (the authors' ``HamHead``: True).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        dropout: float = 0.1,
        in_index: int = -1,
        ham_channels: int | None = None,
        rank: int = 64,
        steps: int = 6,
        one_step_gradient: bool = True,
        norm: Norm = "group",
        concat_input: bool = True,
        activation: Activation = "relu",
    ) -> None:
        super().__init__(in_channels, num_classes, channels, dropout, in_index, activation)
        self.norm = norm
        ham_channels = ham_channels or channels
        self.conv_in = self.conv(self.in_channels, ham_channels)
        self.hamburger = Hamburger(ham_channels, rank=rank, steps=steps, one_step_gradient=one_step_gradient,
                                   norm=norm)
        self.conv_out = self.conv(ham_channels, channels)
        self.fuse = self.conv(self.in_channels + channels, channels) if concat_input else None

    def conv(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1, *,
             act: bool = True) -> ConvNormAct:
        """The head's conv-norm-activation with the head's ``norm``."""
        return ConvNormAct(in_channels, out_channels, kernel_size, dilation,
                           activation=self.activation if act else None, norm=self.norm)

    def context(self, x: Tensor) -> Tensor:
        y = self.conv_out(self.hamburger(self.conv_in(x)))
        return self.fuse(torch.cat([x, y], dim=1)) if self.fuse is not None else y

    def attention_maps(self, x: Tensor, queries: Tensor) -> dict[str, Tensor]:
        """``{"ham": (B, Q, h, w)}``: how strongly each position shares the query's NMF bases,
        ``sum_r C_qr C_jr`` (:meth:`NMF2d.attention_map`; non-negative, not normalised)."""
        return {"ham": self.hamburger.attention_map(self.conv_in(x), queries)}
