"""Non-negative matrix factorisation as a layer: the "ham" of Hamburger (Geng et al., "Is Attention
Better Than Matrix Decomposition?", ICLR 2021, arXiv:2109.04553), the ``NMF2D`` of the authors' code
(Gsunshine/Enjoy-Hamburger) and of mmsegmentation's ``ham_head.py``."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_seg.errors import ConfigError
from lit_seg.models.attention.functional import query_positions

EPS = 1e-6  # added to every denominator of the multiplicative updates, as the reference


def coefficient_update(x: Tensor, bases: Tensor, coef: Tensor) -> Tensor:
    """Lee and Seung's multiplicative update of C in X ~ D C^T: ``C * (X^T D) / (C D^T D + eps)``.

    x (B, D, N) non-negative, bases D (B, D, R), coef C (B, N, R) -> C (B, N, R).
    """
    return coef * torch.bmm(x.transpose(1, 2), bases) / (torch.bmm(coef, torch.bmm(bases.transpose(1, 2), bases)) + EPS)


def bases_update(x: Tensor, bases: Tensor, coef: Tensor) -> Tensor:
    """The multiplicative update of D: ``D * (X C) / (D C^T C + eps)``, (B, D, R)."""
    return bases * torch.bmm(x, coef) / (torch.bmm(bases, torch.bmm(coef.transpose(1, 2), coef)) + EPS)


class NMF2d(nn.Module):
    """(B, C, H, W), non-negative -> its rank-R NMF reconstruction ``D C^T`` (B, C, H, W).

    The C channels are the dimension and the N = H*W positions the samples: X (C x N) ~ D C^T with
    R bases D (C x R) and coefficients C (N x R), all non-negative. From bases D0 and
    ``C0 = softmax_r(X^T D0)``, ``steps`` multiplicative updates of C then D
    (:func:`coefficient_update`, :func:`bases_update`), then one more update of C; the output is
    D C^T. Cost: N x R.

    ``one_step_gradient`` (the paper's, the authors' ``seg/HamNet`` code): the ``steps`` updates
    run without gradient and only the last update of C has one, so the gradient reaches x through
    that update alone. False: through every update, as mmseg's ``LightHamHead`` (and the
    authors' mmseg port) run it.

    D0 is a buffer (1, C, R), uniform in [0, 1) and L2-normalised over C, drawn once at
    construction and the same in training and evaluation (the reference's ``rand_init=False``
    form, without its online update; its default ``rand_init=True`` draws new bases every
    forward, so that evaluation would not reproduce training). The updates run in the buffer's
    dtype (float32 under autocast: multiplicative updates are ratios of sums).
    """

    def __init__(self, channels: int, *, rank: int = 64, steps: int = 6, one_step_gradient: bool = True) -> None:
        super().__init__()
        if rank < 1 or steps < 0:
            raise ConfigError(f"NMF needs rank >= 1 and steps >= 0, got {rank} and {steps}")
        self.rank = rank
        self.steps = steps
        self.one_step_gradient = one_step_gradient
        self.register_buffer("bases", F.normalize(torch.rand(1, channels, rank), dim=1))

    def factorize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, C, H, W) -> bases D (B, C, R) and coefficients C (B, N, R) of the output ``D C^T``."""
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(self.bases.dtype).flatten(2)
            bases = self.bases.expand(x.shape[0], -1, -1)
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.one_step_gradient):
                coef = torch.bmm(x.transpose(1, 2), bases).softmax(dim=-1)
                for _ in range(self.steps):
                    coef = coefficient_update(x, bases, coef)
                    bases = bases_update(x, bases, coef)
            return bases, coefficient_update(x, bases, coef)

    def forward(self, x: Tensor) -> Tensor:
        bases, coef = self.factorize(x)
        return torch.bmm(bases, coef.transpose(1, 2)).unflatten(2, x.shape[-2:]).to(x.dtype)

    def attention_map(self, x: Tensor, queries: Tensor) -> Tensor:
        """The query's coefficients through the bases to the positions: ``sum_r C_qr C_jr``, (B, Q, H, W).

        Position j enters base r in proportion to C_jr (the last update of D is X C, rescaled per
        channel), and the query's reconstruction reads base r with weight C_qr: the map is how
        strongly each position shares the query's bases (non-negative; exact up to that
        per-channel rescaling of D).
        """
        rows, cols = query_positions(queries, x)
        with torch.no_grad():
            _, coef = self.factorize(x)
            query_coef = coef[:, rows * x.shape[-1] + cols]  # (B, Q, R)
            return torch.bmm(query_coef, coef.transpose(1, 2)).unflatten(2, x.shape[-2:])
