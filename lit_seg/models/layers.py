"""Small building blocks shared by heads and operators."""

import math
from typing import Literal

from torch import nn

# The official OCNet and CCNet networks use InPlaceABN: BatchNorm + leaky ReLU (slope 0.01);
# mmsegmentation's recipe, which the experiments follow, BatchNorm + ReLU.
Activation = Literal["relu", "leaky_relu"]
LEAKY_SLOPE = 0.01
# BatchNorm everywhere (the recipe), or GroupNorm where a reference uses it (the Hamburger authors'
# ResNet-D8 head: 32 groups, mmseg's GN config).
Norm = Literal["batch", "group"]
GROUPS = 32


def activation_layer(activation: Activation) -> nn.Module:
    """``relu`` -> ReLU, ``leaky_relu`` -> LeakyReLU(0.01) (InPlaceABN's default slope)."""
    if activation == "relu":
        return nn.ReLU(inplace=True)
    if activation == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
    raise ValueError(f"activation must be 'relu' or 'leaky_relu', got {activation!r}")


def norm_layer(norm: Norm, channels: int) -> nn.Module:
    """``batch`` -> BatchNorm2d; ``group`` -> GroupNorm with 32 groups, or gcd(32, channels) where
    the width is not a multiple of 32 (small test and built-in widths)."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(math.gcd(GROUPS, channels), channels)
    raise ValueError(f"norm must be 'batch' or 'group', got {norm!r}")


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> activation, 'same' padding. (B, C_in, H, W) -> (B, C_out, H, W).

    ``activation=None`` leaves the activation out (BatchNorm only, as the first conv of the
    official Pyramid-OC network). BatchNorm becomes SyncBatchNorm under
    ``trainer.sync_batchnorm: true``; ``norm="group"`` puts GroupNorm in its place
    (:func:`norm_layer`). The conv has no bias: the norm's mean subtraction would cancel it (the
    official OCNet code keeps such biases; they change nothing but the count).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1, *,
                 activation: Activation | None = "relu", norm: Norm = "batch") -> None:
        layers = [
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2),
                      dilation=dilation, bias=False),
            norm_layer(norm, out_channels),
        ]
        if activation is not None:
            layers.append(activation_layer(activation))
        super().__init__(*layers)
