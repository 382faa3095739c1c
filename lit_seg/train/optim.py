"""The papers' optimiser and schedule as classes, so their defaults show in ``--print_config``."""

from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import PolynomialLR


class SGD(torch.optim.SGD):
    """SGD with the recipe every anchor uses: lr 0.01, momentum 0.9, weight decay 5e-4."""

    def __init__(self, params: Iterable, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4,
                 nesterov: bool = False) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


class PolyLR(PolynomialLR):
    """Poly decay, stepped every iteration: ``lr * (1 - step / total_iters) ** power``, power 0.9."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_iters: int, power: float = 0.9) -> None:
        super().__init__(optimizer, total_iters=total_iters, power=power)
