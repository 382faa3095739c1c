"""FLOPs of a module's forward pass, counted the same way everywhere (run summaries, cost harness).

    from lit_seg.train.flops import count_flops
    count_flops(head, features)            # int: FLOPs of head(features), no autograd graph

Counting is :class:`torch.utils.flop_counter.FlopCounterMode`'s: a multiply-add is 2 FLOPs, and
only operators with a registered formula count (matrix products, convolutions, attention;
element-wise work, norms and softmax are free). Importing this module registers the formulas
that torch 2.14 lacks for the CPU flash-attention kernels behind
``F.scaled_dot_product_attention``; without them our dense attention operators would count
only their convolutions on the CPU.
"""

from collections.abc import Callable

import torch
from torch.utils.flop_counter import (
    FlopCounterMode,
    flop_registry,
    register_flop_formula,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

__all__ = ["count_flops", "register_cpu_attention_flops"]


def register_cpu_attention_flops() -> None:
    """Register FLOP formulas for the CPU flash-attention kernels (forward and backward), once.

    Same formulas as the CUDA kernels' (the backward counts the recomputation of q k^T, as the
    CPU kernel does). A no-op where torch already has them.
    """
    aten = torch.ops.aten
    # The CPU kernels are named by torch's dispatcher (an underscore op name is how aten names the
    # backend kernels behind F.scaled_dot_product_attention); no public handle exists for them.
    # tests/unit/test_benchmark.py checks that a dense attention block's FLOPs are counted.
    if aten._scaled_dot_product_flash_attention_for_cpu not in flop_registry:
        @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
        def _cpu_flash_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return sdpa_flop_count(query_shape, key_shape, value_shape)

    if aten._scaled_dot_product_flash_attention_for_cpu_backward not in flop_registry:
        @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
        def _cpu_flash_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args,
                                     out_shape=None, **kwargs) -> int:
            return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


register_cpu_attention_flops()


def count_flops(module: Callable, *inputs, **kwargs) -> int:
    """FLOPs of one ``module(*inputs, **kwargs)`` call (a module's forward pass), under ``no_grad``.

    The module runs in its current mode (call ``.eval()`` first for the inference cost: e.g.
    DANet's head evaluates only its fused output in eval mode).
    """
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs, **kwargs)
    return int(counter.get_total_flops())
