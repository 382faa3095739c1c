"""Lightning's Trainer, and one more precision: ``auto`` (:mod:`lit_seg.train.precision`)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

from lit_seg.train.precision import AUTO, resolve_precision


class Trainer(pl.Trainer):
    """:class:`lightning.pytorch.Trainer`; ``precision="auto"`` is bf16 autocast (``bf16-mixed``)
    where the device computes in bf16 (a GPU with bf16, a CPU with AVX-512 BF16 or AMX) and
    ``32-true`` elsewhere, chosen when the trainer is built and said in one line (the run's record
    keeps the choice). Every other precision is Lightning's.

    Args:
        precision: ``auto``, or any of Lightning's (``32-true``, ``bf16-mixed``, ``16-mixed``, ...).
        **kwargs: Lightning's Trainer arguments.
    """

    def __init__(self, *args: Any, precision: str | int | None = None, **kwargs: Any) -> None:
        if precision == AUTO:
            precision, reason = resolve_precision(kwargs.get("accelerator", "auto"))
            rank_zero_info(f"lit-seg: precision auto: {precision}, since {reason}")
        super().__init__(*args, precision=precision, **kwargs)
