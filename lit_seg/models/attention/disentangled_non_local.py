"""Disentangled non-local block (Yin et al., "Disentangled Non-Local Neural Networks", ECCV 2020,
arXiv:2006.06668), as mmsegmentation's ``DisentangledNonLocal2d``."""

import torch.nn.functional as F
from torch import Tensor, nn

from lit_seg.errors import ConfigError
from lit_seg.models.attention.functional import query_positions, softmax_attention
from lit_seg.models.attention.non_local import NonLocal2d


class DisentangledNonLocal2d(NonLocal2d):
    """``z = x + W(y_pairwise) + W(y_unary)``: a whitened pairwise term and a unary term.

    Input and output: (B, C, H, W); theta, phi, g and W as the embedded-Gaussian
    :class:`NonLocal2d` (C' = C // reduction channels, W = 1x1 conv + zero-initialised BatchNorm).

    - pairwise: ``softmax_j((theta_i - mean theta) . (phi_j - mean phi) / (sqrt(C') T))`` over
      the positions j, means taken over the positions (whitening: the term then depends on the
      relation of i and j only), ``T`` the ``temperature`` (0.05);
    - unary: ``softmax_j(m_j)`` with m a 1x1 conv C -> 1 (``conv_mask``): one map shared by all
      queries, the salience of each key alone.

    Both weigh the same values g_j. W is applied to each term separately, as mmsegmentation
    does: in training its BatchNorm normalises the pairwise map and the (B, C', 1, 1) unary
    vector with their own batch statistics (so training needs batches of at least 2).
    """

    def __init__(self, channels: int, *, reduction: int = 2, use_scale: bool = True,
                 temperature: float = 0.05) -> None:
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        super().__init__(channels, reduction=reduction, use_scale=use_scale)
        self.temperature = temperature
        self.conv_mask = nn.Conv2d(channels, 1, 1)

    def _scale(self) -> float:
        return super()._scale() / self.temperature

    def _whitened(self, x: Tensor) -> tuple[Tensor, Tensor]:
        query, key = self.theta(x).flatten(2), self.phi(x).flatten(2)  # (B, C', N)
        return query - query.mean(dim=2, keepdim=True), key - key.mean(dim=2, keepdim=True)

    def forward(self, x: Tensor) -> Tensor:
        query, key = self._whitened(x)
        value = self.g(x).flatten(2)
        pairwise = softmax_attention(query, key, value, self._scale()).unflatten(2, x.shape[-2:])
        unary = (value * self.conv_mask(x).flatten(2).softmax(dim=-1)).sum(dim=2)[..., None, None]
        return x + self.W(pairwise) + self.W(unary)

    def attention_map(self, x: Tensor, queries: Tensor) -> Tensor:
        """The pairwise weights of the query pixels over the positions: (B, Q, H, W), each summing to 1."""
        rows, cols = query_positions(queries, x)
        query, key = self._whitened(x)
        energy = query[:, :, rows * x.shape[-1] + cols].transpose(1, 2) @ key  # (B, Q, N)
        return (energy * self._scale()).softmax(dim=-1).unflatten(-1, x.shape[-2:])

    def unary_map(self, x: Tensor) -> Tensor:
        """The unary weights over the positions, (B, 1, H, W), summing to 1 (the same for every query)."""
        return F.softmax(self.conv_mask(x).flatten(2), dim=-1).view(x.shape[0], 1, *x.shape[-2:])
