"""Non-local block (Wang et al., "Non-local Neural Networks", CVPR 2018, arXiv:1711.07971)."""

from typing import Literal, get_args

import torch
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

NonLocalMode = Literal["gaussian", "embedded_gaussian", "dot_product", "concatenation"]


class NonLocal2d(nn.Module):
    """``z_i = x_i + W(y_i)``, ``y_i = sum_j f(x_i, x_j) g(x_j) / C(x)``, with the paper's four ``f``.

    Input and output: (B, C, H, W). ``theta``, ``phi`` and ``g`` are 1x1 convs to
    ``C' = max(C // reduction, 1)`` channels; ``W`` is a 1x1 conv back to C followed by
    BatchNorm whose weight and bias start at zero, so a fresh block is the identity. theta, phi
    and g start from N(0, 0.01) (mmcv's initialisation).

    ``mode`` (the pairwise function, normalised over the key positions j):

    - ``gaussian``: ``softmax_j(x_i . x_j)`` on the raw input; there is no theta or phi, and no
      scaling (the reference code's form).
    - ``embedded_gaussian``: ``softmax_j(theta_i . phi_j / sqrt(C'))``; without the
      ``1 / sqrt(C')`` when ``use_scale`` is False (``use_scale`` affects only this mode).
    - ``dot_product``: ``theta_i . phi_j / M``, M the number of key positions.
    - ``concatenation``: ``ReLU(w . [theta_i; phi_j]) / M``, w a bias-free 1x1 conv 2C' -> 1
      (``concat_project``).

    ``sub_sample`` max-pools (2x2) the keys and values (phi and g; the raw x as key in
    ``gaussian``), so M = (H // 2) * (W // 2); the queries keep full resolution.

    Three options tell what separates this block from OCNet's self-attention (the task suite's
    interventions; none is the paper's network): ``share_key_query`` makes phi the very module
    theta is (OCNet's ``f_key`` serves as both), ``projection_init="pytorch"`` leaves theta, phi
    and g at PyTorch's default initialisation (OCNet's) instead of mmcv's N(0, 0.01), under which
    the logits theta_i . phi_j start near 0 and every query attends almost uniformly, and
    ``key_query_activation`` puts BatchNorm and that activation after theta and phi (OCNet's
    ``f_key`` is conv-BN-activation: non-negative embeddings of unit scale from the start).

    No mode builds the (B, 2C', N, M) tensor of the reference code, and only the two
    softmax modes touch an N x M matrix, in memory-lean blocks (``softmax_attention``):
    ``dot_product`` is evaluated as ``theta (phi^T g) / M`` (C' x C' memory) and
    ``concatenation`` by sorting the keys (see ``_relu_pair_sum``), linear in N and M.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 2,
        mode: NonLocalMode = "embedded_gaussian",
        sub_sample: bool = False,
        use_scale: bool = True,
        share_key_query: bool = False,
        projection_init: Literal["mmcv", "pytorch"] = "mmcv",
        key_query_activation: Activation | None = None,
    ) -> None:
        super().__init__()
        if mode not in get_args(NonLocalMode):
            raise ConfigError(f"mode must be one of {get_args(NonLocalMode)}, got {mode!r}")
        if projection_init not in ("mmcv", "pytorch"):
            raise ConfigError(f"projection_init must be 'mmcv' or 'pytorch', got {projection_init!r}")
        if share_key_query and mode == "gaussian":
            raise ConfigError("share_key_query needs theta and phi: the gaussian mode has neither")
        if key_query_activation is not None and mode == "gaussian":
            raise ConfigError("key_query_activation needs theta and phi: the gaussian mode has neither")
        self.mode = mode
        self.use_scale = use_scale
        self.sub_sample = sub_sample
        self.inter_channels = max(channels // reduction, 1)
        self.g = nn.Conv2d(channels, self.inter_channels, 1)
        if mode != "gaussian":
            self.theta = self._embedding(channels, key_query_activation)
            self.phi = self.theta if share_key_query else self._embedding(channels, key_query_activation)
        if mode == "concatenation":
            self.concat_project = nn.Conv2d(2 * self.inter_channels, 1, 1, bias=False)
        # The conv bias before BatchNorm would be cancelled by the batch mean: left out.
        self.W = nn.Sequential(nn.Conv2d(self.inter_channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)
        self.pool = nn.MaxPool2d(2) if sub_sample else nn.Identity()
        # mmcv's NonLocal2d.init_weights: theta, phi and g from N(0, 0.01) with zero bias;
        # concat_project as its ConvModule (Kaiming normal, fan_out, ReLU gain).
        for name in ("g", "theta", "phi") if projection_init == "mmcv" else ():
            if hasattr(self, name):
                conv = getattr(self, name)
                conv = conv[0] if isinstance(conv, nn.Sequential) else conv
                nn.init.normal_(conv.weight, std=0.01)
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)
        if mode == "concatenation":
            nn.init.kaiming_normal_(self.concat_project.weight, mode="fan_out", nonlinearity="relu")

    def _embedding(self, channels: int, activation: Activation | None) -> nn.Module:
        """theta or phi: a 1x1 conv to C', then BatchNorm and ``activation`` if one is given (the conv
        bias, which the batch mean would cancel, left out)."""
        if activation is None:
            return nn.Conv2d(channels, self.inter_channels, 1)
        return nn.Sequential(nn.Conv2d(channels, self.inter_channels, 1, bias=False),
                             nn.BatchNorm2d(self.inter_channels), activation_layer(activation))

    def _embeddings(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Query and key embeddings: (B, C', H, W) and (B, C', H', W') (raw x in ``gaussian``)."""
        if self.mode == "gaussian":
            return x, self.pool(x)
        query = self.theta(x)
        # One module for both (OCNet's f_key): computed once, its BatchNorm statistics updated once.
        return query, self.pool(query if self.phi is self.theta else self.phi(x))

    def _concat_terms(self, theta: Tensor, phi: Tensor) -> tuple[Tensor, Tensor]:
        """``w . [theta_i; phi_j] = a_i + b_j``: theta (B, C', N), phi (B, C', M) -> a (B, N), b (B, M)."""
        w = self.concat_project.weight.flatten()
        w_theta, w_phi = w[: self.inter_channels], w[self.inter_channels :]
        return w_theta @ theta, w_phi @ phi

    def context(self, x: Tensor) -> Tensor:
        """``y`` before W: (B, C', H, W)."""
        query, key = self._embeddings(x)
        query, key, value = query.flatten(2), key.flatten(2), self.pool(self.g(x)).flatten(2)  # (B, ., N or M)
        if self.mode in ("gaussian", "embedded_gaussian"):
            scale = self.inter_channels**-0.5 if self.mode == "embedded_gaussian" and self.use_scale else 1.0
            y = softmax_attention(query, key, value, scale)
        elif self.mode == "dot_product":
            # g (theta^T phi / M)^T == (g phi^T) theta / M: a C' x C' product, no N x M matrix.
            y = torch.bmm(torch.bmm(value, key.transpose(1, 2)), query) / key.shape[2]
        else:
            a, b = self._concat_terms(query, key)
            y = _relu_pair_sum(a, b, value) / key.shape[2]
        return y.unflatten(2, x.shape[-2:])

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "embedded_gaussian" and not self.sub_sample and isinstance(self.theta, nn.Conv2d):
            # The same computation without layout copies: theta, phi and g straight into the token
            # layout of the fused attention kernel, W's conv straight back to channel-first.
            query, key, value = conv1x1_tokens(x, self.theta, self.phi, self.g)
            y = softmax_attention_tokens(query, key, value, self._scale())
            return x + self.W[1](tokens_conv1x1(y, self.W[0], x.shape[-2:]))
        return x + self.W(self.context(x))

    def _scale(self) -> float:
        return self.inter_channels**-0.5 if self.mode == "embedded_gaussian" and self.use_scale else 1.0

    def attention_map(self, x: Tensor, queries: Tensor) -> Tensor:
        """Weights ``f(x_i, x_j) / C(x)`` of the query pixels over the keys: (B, Q, H', W').

        ``queries``: (Q, 2) integer (row, col) in x's resolution. (H', W') is the key resolution:
        (H, W), or (H // 2, W // 2) with ``sub_sample``. Rows sum to 1 in the softmax modes
        (``gaussian``, ``embedded_gaussian``), not in ``dot_product`` and ``concatenation``.
        """
        rows, cols = query_positions(queries, x)
        index = rows * x.shape[-1] + cols
        points = x.flatten(2)[:, :, index].unsqueeze(-1)  # (B, C, Q, 1): only the query pixels
        if self.mode == "gaussian":
            query, key = points, self.pool(x)
        elif isinstance(self.theta, nn.Conv2d):
            query, key = self.theta(points), self.pool(self.phi(x))
        else:  # BatchNorm in theta: embed the whole map (its batch statistics in training), then pick
            query, key = self.theta(x).flatten(2)[:, :, index].unsqueeze(-1), self.pool(self.phi(x))
        key_size = key.shape[-2:]
        query, key = query.flatten(2), key.flatten(2)  # (B, ., Q), (B, ., M)
        if self.mode == "concatenation":
            a, b = self._concat_terms(query, key)
            weights = F.relu(a[:, :, None] + b[:, None, :]) / key.shape[2]
        else:
            energy = query.transpose(1, 2) @ key
            if self.mode == "dot_product":
                weights = energy / key.shape[2]
            else:
                scale = self.inter_channels**-0.5 if self.mode == "embedded_gaussian" and self.use_scale else 1.0
                weights = (energy * scale).softmax(dim=-1)
        return weights.unflatten(-1, key_size)


def _relu_pair_sum(a: Tensor, b: Tensor, g: Tensor) -> Tensor:
    """``y_i = sum_j ReLU(a_i + b_j) g_j`` for a (B, N), b (B, M), g (B, C, M) -> (B, C, N).

    The term is non-zero only for the keys with ``b_j > -a_i``: with the keys sorted by
    decreasing b those are a prefix, so ``y_i = a_i * G_k + BG_k`` with G and BG the prefix
    sums of g_j and b_j g_j and k the prefix length (a binary search). O((N + M) C + M log M)
    time and memory instead of the N x M matrix; autograd differentiates through sort, cumsum
    and gather (the gradient of ReLU at exactly 0 is 0, as in F.relu).
    """
    b_sorted, order = b.sort(dim=1, descending=True)
    g_sorted = torch.take_along_dim(g, order.unsqueeze(1), dim=2)
    zero = g.new_zeros(g.shape[0], g.shape[1], 1)
    prefix_g = torch.cat([zero, g_sorted.cumsum(dim=2)], dim=2)  # (B, C, M + 1)
    prefix_bg = torch.cat([zero, (b_sorted.unsqueeze(1) * g_sorted).cumsum(dim=2)], dim=2)
    # -b_sorted is ascending: count the keys with -b_j < a_i, i.e. b_j > -a_i.
    active = torch.searchsorted(b_sorted.detach().neg().contiguous(), a.detach().contiguous(), side="left")
    index = active.unsqueeze(1).expand(-1, g.shape[1], -1)
    return a.unsqueeze(1) * prefix_g.gather(2, index) + prefix_bg.gather(2, index)
