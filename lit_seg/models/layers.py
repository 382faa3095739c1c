"""Small building blocks shared by heads."""

from torch import nn


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU, 'same' padding. (B, C_in, H, W) -> (B, C_out, H, W).

    BatchNorm becomes SyncBatchNorm under ``trainer.sync_batchnorm: true``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2),
                      dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
