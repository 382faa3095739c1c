"""OCNet's self-attention block (Yuan et al., "OCNet: Object Context Network for Scene Parsing",
arXiv:1809.00916), the ``_SelfAttentionBlock`` of the official code."""

import torch.nn.functional as F
from torch import Tensor, nn

from lit_seg.errors import ConfigError
from lit_seg.models.attention.functional import (
    conv1x1_tokens,
    query_positions,
    softmax_attention,
    softmax_attention_tokens,
    tokens_conv1x1,
)
from lit_seg.models.layers import Activation, activation_layer


class SelfAttention2d(nn.Module):
    """Object context: ``W(softmax(q k^T / sqrt(key_channels)) v)``, the context only (no residual).

    Input (B, channels, H, W), output (B, out_channels, H, W) (``out_channels`` defaults to
    ``channels``). Query and key share ONE projection ``f_key`` (1x1 conv + BatchNorm +
    ``activation``: the official code's InPlaceABNSync is BN + leaky ReLU, ``leaky_relu`` here;
    ``relu`` is mmsegmentation's norm/act, the recipe's default); the value is a 1x1 conv to
    ``value_channels``; the output conv ``W``
    (value_channels -> out_channels) starts at zero, weight and bias, so a fresh block returns 0.

    ``scale > 1`` max-pools the input by ``scale`` before the attention and upsamples the context
    back (bilinear, ``align_corners=False``; the 2018 code used ``align_corners=True``).
    """

    def __init__(
        self,
        channels: int,
        *,
        key_channels: int,
        value_channels: int,
        out_channels: int | None = None,
        scale: int = 1,
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        if scale < 1:
            raise ConfigError(f"scale must be >= 1, got {scale}")
        self.scale = scale
        self.key_channels = key_channels
        self.value_channels = value_channels
        self.out_channels = channels if out_channels is None else out_channels
        self.pool = nn.MaxPool2d(scale) if scale > 1 else nn.Identity()
        # The conv bias before BatchNorm would be cancelled by the batch mean: left out.
        self.f_key = nn.Sequential(
            nn.Conv2d(channels, key_channels, 1, bias=False), nn.BatchNorm2d(key_channels), activation_layer(activation)
        )
        self.f_value = nn.Conv2d(channels, value_channels, 1)
        self.W = nn.Conv2d(value_channels, self.out_channels, 1)
        nn.init.zeros_(self.W.weight)
        nn.init.zeros_(self.W.bias)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        pooled = self.pool(x)
        key = self.f_key(pooled).flatten(2)  # also the query
        scale = self.key_channels**-0.5
        if self.key_channels == self.value_channels or x.device.type != "cpu":
            # The fused kernel's token layout, with f_value and W computed straight into and out
            # of it (see functional.conv1x1_tokens): one layout copy (the key) instead of four.
            key = key.transpose(1, 2).contiguous()
            (value,) = conv1x1_tokens(pooled, self.f_value)
            context = tokens_conv1x1(softmax_attention_tokens(key, key, value, scale), self.W, pooled.shape[-2:])
        else:
            value = self.f_value(pooled).flatten(2)
            context = self.W(softmax_attention(key, key, value, scale).unflatten(2, pooled.shape[-2:]))
        if self.scale > 1:
            context = F.interpolate(context, size=(height, width), mode="bilinear", align_corners=False)
        return context

    def attention_map(self, x: Tensor, queries: Tensor) -> Tensor:
        """Softmax weights of the query pixels over the keys: (B, Q, H', W'), rows sum to 1.

        ``queries``: (Q, 2) integer (row, col) in x's resolution. With ``scale > 1`` the keys
        are the pooled cells, (H', W') = (H // scale, W // scale), and a query stands for the
        pooled cell that contains it (the output there interpolates neighbouring cells' context).
        The BatchNorm in ``f_key`` uses batch statistics in training mode: call ``eval()`` first
        for the weights the trained model uses.
        """
        rows, cols = query_positions(queries, x)
        key = self.f_key(self.pool(x))
        pooled_height, pooled_width = key.shape[-2:]
        rows = (rows // self.scale).clamp(max=pooled_height - 1)
        cols = (cols // self.scale).clamp(max=pooled_width - 1)
        query = key[:, :, rows, cols].transpose(1, 2)  # (B, Q, key_channels)
        energy = query @ key.flatten(2) * self.key_channels**-0.5
        return energy.softmax(dim=-1).unflatten(-1, (pooled_height, pooled_width))
