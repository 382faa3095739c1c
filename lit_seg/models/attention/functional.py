"""Kernels shared by the dense operators: softmax attention without the N x M matrix.

``softmax_attention(query, key, value, scale)`` computes, for every query position i,
``sum_j softmax_j(scale * q_i . k_j) v_j``. The tensors are channel-first, as 1x1 convs give
them: query (B, d, N), key (B, d, M), value (B, e, M), result (B, e, N).

- d == e, or any non-CPU device: ``F.scaled_dot_product_attention`` on contiguous
  (B, 1, N, d) copies. On the CPU that is the fused flash kernel (the N x M matrix is never
  stored) only when q, k and v are contiguous and share one head size; on CUDA the dispatcher
  picks its own kernel.
- d != e on the CPU: the fused kernel would silently fall back to the math path that builds
  the N x M matrix, and padding the smaller head to the larger one (or splitting v into heads
  of size d) doubles the FLOPs for DANet's PAM (d = C/8, e = C): at C=512, 64x64, batch 2 on
  one CPU thread, 1.3x (padding) and 2x (heads) slower than the plain form.
  ``_ChunkedSoftmaxAttention`` instead runs the same algorithm in blocks of query rows and
  recomputes the weights in the backward from the saved log-sum-exp, as flash attention does:
  the FLOPs of the plain form plus one q k^T, memory linear in N and M plus one block, and no
  layout copies (it works on the channel-first tensors directly).
"""

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

# Elements of one (B, rows, M) block of attention weights in the chunked kernel: 1 Mi elements
# (4 MiB in float32; the backward holds two blocks), but at least MIN_ROWS query rows so the
# matrix products stay efficient. Measured at d=64, e=512, N=M=4096, B=2: the same time with
# 1 Mi and 4 Mi, less memory with 1 Mi.
CHUNK_ELEMENTS = 1 << 20
MIN_ROWS = 32


def _tokens(x: Tensor) -> Tensor:
    """(B, C, N) -> contiguous (B, 1, N, C), the layout of the fused kernel."""
    return x.transpose(1, 2).unsqueeze(1).contiguous()


def softmax_attention(query: Tensor, key: Tensor, value: Tensor, scale: float) -> Tensor:
    """``softmax(scale * q^T k, over keys) v``: q (B, d, N), k (B, d, M), v (B, e, M) -> (B, e, N)."""
    if query.shape[1] == value.shape[1] or query.device.type != "cpu":
        q = _tokens(query)
        k = q if key is query else _tokens(key)
        out = F.scaled_dot_product_attention(q, k, _tokens(value), scale=scale)
        # Back to channel-first and contiguous: a channels-last view here makes the following
        # conv, BatchNorm and residual add take slow strided paths (measured: about 10% of a
        # non-local block's time at C=512, 64x64).
        return out.squeeze(1).transpose(1, 2).contiguous()
    rows = max(MIN_ROWS, CHUNK_ELEMENTS // max(1, query.shape[0] * key.shape[2]))
    return _ChunkedSoftmaxAttention.apply(query, key, value, float(scale), rows)


class _ChunkedSoftmaxAttention(torch.autograd.Function):
    """Softmax attention over blocks of query positions; the backward recomputes the weights.

    Channel-first: q (B, d, N), k (B, d, M), v (B, e, M) -> out (B, e, N).
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float, rows: int) -> Tensor:
        batch, length = q.shape[0], q.shape[2]
        q_scaled = q * scale
        out = v.new_empty(batch, v.shape[1], length)
        log_sum_exp = q.new_empty(batch, length, 1)
        for start in range(0, length, rows):
            block = slice(start, start + rows)
            logits = torch.bmm(q_scaled[:, :, block].transpose(1, 2), k)  # (B, rows, M)
            peak = logits.amax(dim=-1, keepdim=True)
            weights = logits.sub_(peak).exp_()
            total = weights.sum(dim=-1, keepdim=True)
            out[:, :, block] = torch.bmm(v, weights.transpose(1, 2)).div_(total.transpose(1, 2))
            log_sum_exp[:, block] = peak + total.log()
        ctx.save_for_backward(q, k, v, out, log_sum_exp)
        ctx.scale, ctx.rows = scale, rows
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        q, k, v, out, log_sum_exp = ctx.saved_tensors
        scale, rows = ctx.scale, ctx.rows
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        q_scaled = q * scale
        grad_q = torch.empty_like(q) if need_q else None
        grad_k = torch.zeros_like(k) if need_k else None
        grad_v = torch.zeros_like(v) if need_v else None
        for start in range(0, q.shape[2], rows):
            block = slice(start, start + rows)
            weights = torch.bmm(q_scaled[:, :, block].transpose(1, 2), k).sub_(log_sum_exp[:, block]).exp_()
            grad_block = grad_out[:, :, block]  # (B, e, rows)
            if need_v:
                grad_v.baddbmm_(grad_block, weights)
            if need_q or need_k:
                # d softmax: dS = P * (dP - rowsum(dP * P)), and rowsum(dP * P) = rowsum(dO * O).
                delta = (grad_block * out[:, :, block]).sum(dim=1).unsqueeze(-1)  # (B, rows, 1)
                grad_logits = torch.bmm(grad_block.transpose(1, 2), v).sub_(delta).mul_(weights)
                if need_q:
                    grad_q[:, :, block] = torch.bmm(k, grad_logits.transpose(1, 2)).mul_(scale)
                if need_k:
                    grad_k.baddbmm_(q_scaled[:, :, block], grad_logits)
        return grad_q, grad_k, grad_v, None, None


def query_positions(queries: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Checks (Q, 2) integer (row, col) queries against x's (H, W); returns rows and cols (Q,) on x's device."""
    height, width = x.shape[-2:]
    if queries.dim() != 2 or queries.shape[1] != 2 or queries.dtype.is_floating_point or queries.dtype == torch.bool:
        shape = tuple(queries.shape)
        raise ValueError(f"queries must be an integer tensor of shape (Q, 2), (row, col), got {shape} {queries.dtype}")
    rows, cols = queries[:, 0].long(), queries[:, 1].long()
    if queries.numel() and (rows.min() < 0 or cols.min() < 0 or rows.max() >= height or cols.max() >= width):
        raise ValueError(f"queries must lie inside the {height}x{width} input, got {queries.tolist()}")
    return rows.to(x.device), cols.to(x.device)
