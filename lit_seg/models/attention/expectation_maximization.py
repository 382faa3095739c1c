"""Expectation-maximization attention (Li et al., "Expectation-Maximization Attention Networks for
Semantic Segmentation", ICCV 2019, arXiv:1907.13426): the EMA unit of EMANet, as mmsegmentation's
``EMAHead`` runs it (``ema_mid_conv``, ``EMAModule``, ``ema_out_conv`` and the residual)."""

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from lit_seg.errors import ConfigError
from lit_seg.models.attention.functional import query_positions


def expectation_maximization(x: Tensor, bases: Tensor, num_stages: int) -> tuple[Tensor, Tensor]:
    """``num_stages`` EM iterations on x (B, C, N) from bases (B, C, K).

    E-step: responsibilities ``z = softmax_k(x_n . mu_k)`` (B, N, K); M-step: each base the
    responsibility-weighted mean of the positions, ``mu_k = sum_n z_nk x_n / sum_n z_nk``,
    L2-normalised over C. Returns the bases of the last M-step and the responsibilities of the
    last E-step (the pair the reconstruction ``mu z^T`` uses).
    """
    for _ in range(num_stages):
        z = torch.bmm(x.transpose(1, 2), bases).softmax(dim=2)
        bases = F.normalize(torch.bmm(x, F.normalize(z, p=1, dim=1)), dim=1)
    return bases, z


def mean_across_processes(t: Tensor) -> Tensor:
    """The mean of ``t`` over the DDP processes (all-reduce), or ``t`` itself outside distributed runs."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    t = t.clone()
    dist.all_reduce(t.div_(dist.get_world_size()), op=dist.ReduceOp.SUM)
    return t


class ExpectationMaximizationAttention(nn.Module):
    """``relu(x + BN(W_out relu(mu z^T)))``: the input reconstructed from K bases found by EM.

    Input and output (B, C, H, W). ``W_in`` (a 1x1 conv with bias) maps x to the features the EM
    runs on (N = H*W positions); ``num_stages`` EM iterations (:func:`expectation_maximization`)
    start from the moving-average bases (a buffer, (1, C, K)) and give K bases mu and the
    responsibilities z; the reconstruction ``mu z^T`` (B, C, N) goes through ReLU, ``W_out``
    (1x1 conv + BatchNorm, PyTorch's default init) and is added to x. Cost: N x K, no N x N map.

    As the official code and mmseg: no gradient flows through the EM iterations nor the
    reconstruction (both detached), so ``W_in`` never gets one and is frozen
    (``requires_grad=False``, mmseg's ``ema_mid_conv``); it keeps its random initialisation,
    mmcv ConvModule's (Kaiming normal, fan_out, zero bias), since that fixed projection is part
    of the method. The EM runs in the buffer's dtype (float32 under autocast).

    In training each forward then moves the buffer towards the batch's bases:
    ``bases <- (1 - momentum) bases + momentum * l2norm(mean over the batch and, under DDP, over
    the processes)``, after the output is computed, so the update never changes the output of the
    forward that makes it; evaluation never updates. The buffer starts from N(0, 2/K), normalised
    over C (the official code's Kaiming-style init).
    """

    def __init__(self, channels: int, *, num_bases: int = 64, num_stages: int = 3, momentum: float = 0.1) -> None:
        super().__init__()
        if num_bases < 1 or num_stages < 1:
            raise ConfigError(f"EMA needs num_bases >= 1 and num_stages >= 1, got {num_bases} and {num_stages}")
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"EMA momentum must lie in [0, 1], got {momentum}")
        self.num_bases = num_bases
        self.num_stages = num_stages
        self.momentum = momentum
        bases = torch.empty(1, channels, num_bases).normal_(0.0, math.sqrt(2.0 / num_bases))
        self.register_buffer("bases", F.normalize(bases, dim=1))
        self.project = nn.Conv2d(channels, channels, 1)
        nn.init.kaiming_normal_(self.project.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.project.bias)
        self.project.requires_grad_(False)
        # The conv bias before BatchNorm would be cancelled by the batch mean: left out (as mmseg).
        self.out = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def _em(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``W_in x`` as (B, C, N) in the buffer's dtype, and the EM's bases and responsibilities."""
        with torch.autocast(x.device.type, enabled=False):
            feats = self.project(x.to(self.bases.dtype)).flatten(2)
            bases, z = expectation_maximization(feats, self.bases.expand(x.shape[0], -1, -1), self.num_stages)
        return feats, bases, z

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            _, bases, z = self._em(x)
            reconstruction = torch.bmm(bases, z.transpose(1, 2)).unflatten(2, x.shape[-2:])
            if self.training:
                update = F.normalize(mean_across_processes(bases.mean(dim=0, keepdim=True)), dim=1)
                self.bases.mul_(1.0 - self.momentum).add_(update, alpha=self.momentum)
        return F.relu(x + self.out(F.relu(reconstruction.to(x.dtype))))

    def attention_map(self, x: Tensor, queries: Tensor) -> Tensor:
        """The weights with which each query's reconstruction sums the positions: (B, Q, H, W).

        ``(mu z^T)_q = sum_j A_qj (W_in x)_j`` exactly, with ``A_qj = sum_k z_qk zbar_jk / n_k``:
        the query's responsibilities over the bases, projected back through the bases to the
        positions (``zbar`` = z normalised over the positions, ``n_k`` the norm of base k before
        its L2 normalisation). Non-negative; uses the current bases buffer, never updates it.
        """
        rows, cols = query_positions(queries, x)
        with torch.no_grad():
            feats, _, z = self._em(x)
            weights = F.normalize(z, p=1, dim=1)  # (B, N, K)
            norms = torch.bmm(feats, weights).norm(dim=1, keepdim=True).clamp_min(1e-12)  # (B, 1, K)
            query_z = z[:, rows * x.shape[-1] + cols] / norms  # (B, Q, K)
            return torch.bmm(query_z, weights.transpose(1, 2)).unflatten(2, x.shape[-2:])
