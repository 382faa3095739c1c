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
  recomputes each block's weights in the backward, as flash attention does:
  the FLOPs of the plain form plus one q k^T, memory linear in N and M plus one block, and no
  layout copies (it works on the channel-first tensors directly).

Operators whose projections are plain 1x1 convs can skip the layout copies of the first form:
``conv1x1_tokens`` computes the projections straight into the token layout,
``softmax_attention_tokens`` runs the fused kernel on them and ``tokens_conv1x1`` applies the
output conv back to channel-first (measured on NonLocal2d at C=512, 64x64: about 10% of its
forward + backward time were these copies).
"""

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

# Elements of one (B, rows, M) block of attention weights in the chunked kernel: 2 Mi elements
# (8 MiB in float32; the backward holds three blocks), but at least MIN_ROWS query rows so the
# matrix products stay efficient.
CHUNK_ELEMENTS = 1 << 21
MIN_ROWS = 32


def autocast_inputs(*tensors: Tensor | None, dtype: torch.dtype | None = None) -> tuple[Tensor | None, ...]:
    """Floating inputs of a custom autograd Function, cast to the autocast dtype when autocast is on.

    Under autocast the inputs arrive in mixed dtypes (convs give bf16/fp16, softmax float32), and
    a Function's backward runs outside autocast: bmm with ``out=`` or between a bf16 and a
    float32 operand then fails. Casting once at the entry runs the Function as the built-in
    matrix products would run (in the low-precision dtype) and gives its backward one dtype.
    ``dtype`` overrides the autocast dtype (float32 for sums that low precision would ruin).
    Outside autocast the tensors are returned unchanged.
    """
    device = next((t.device.type for t in tensors if t is not None), "cpu")
    if not torch.is_autocast_enabled(device):
        return tensors
    dtype = dtype or torch.get_autocast_dtype(device)
    return tuple(t.to(dtype) if t is not None and t.is_floating_point() else t for t in tensors)


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
    # In float32 under autocast (this path is CPU only): the CPU's bf16 bmm / baddbmm_ on these
    # transposed operands take a slow path, 16-28x the float32 time of DANet's PAM and Pyramid-OC
    # heads (measured at the reach task's size, one thread).
    inputs = autocast_inputs(query, key, value, dtype=torch.float32)
    with torch.autocast("cpu", enabled=False):
        return _ChunkedSoftmaxAttention.apply(*inputs, float(scale), rows)


class _ChunkedSoftmaxAttention(torch.autograd.Function):
    """Softmax attention over blocks of query positions; the backward recomputes the weights.

    Channel-first: q (B, d, N), k (B, d, M), v (B, e, M) -> out (B, e, N). Per block of query
    rows only fused ops (a product, ``softmax``, a product; in the backward ``softmax`` again and
    the softmax's backward in place): few passes over the block, and few ops, which matters on a
    shared CPU where every parallel op can wait for a busy core.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float, rows: int) -> Tensor:
        batch, length = q.shape[0], q.shape[2]
        q_scaled = q * scale
        out = v.new_empty(batch, v.shape[1], length)
        for start in range(0, length, rows):
            block = slice(start, start + rows)
            weights = torch.bmm(q_scaled[:, :, block].transpose(1, 2), k).softmax(dim=-1)  # (B, rows, M)
            torch.bmm(v, weights.transpose(1, 2), out=out[:, :, block])
        ctx.save_for_backward(q, k, v)
        ctx.scale, ctx.rows = scale, rows
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        q, k, v = ctx.saved_tensors
        scale, rows = ctx.scale, ctx.rows
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        q_scaled = q * scale
        grad_q = torch.empty_like(q) if need_q else None
        grad_k = torch.zeros_like(k) if need_k else None
        grad_v = torch.zeros_like(v) if need_v else None
        for start in range(0, q.shape[2], rows):
            block = slice(start, start + rows)
            weights = torch.bmm(q_scaled[:, :, block].transpose(1, 2), k).softmax(dim=-1)  # recomputed
            grad_block = grad_out[:, :, block]  # (B, e, rows)
            if need_v:
                grad_v.baddbmm_(grad_block, weights)
            if need_q or need_k:
                # The softmax's backward, w * (g - sum(g * w)), in place on g (no second block-sized tensor).
                grad_logits = torch.bmm(grad_block.transpose(1, 2), v).mul_(weights)  # (B, rows, M): g * w
                grad_logits.addcmul_(weights, grad_logits.sum(dim=-1, keepdim=True), value=-1.0)
                if need_q:
                    torch.bmm(k, grad_logits.transpose(1, 2), out=grad_q[:, :, block]).mul_(scale)
                if need_k:
                    grad_k.baddbmm_(q_scaled[:, :, block], grad_logits)
        return grad_q, grad_k, grad_v, None, None


def conv1x1_tokens(x: Tensor, *convs: torch.nn.Conv2d) -> tuple[Tensor, ...]:
    """1x1 convolutions of x (B, C, H, W), each returned in token layout (B, H*W, out), contiguous.

    Equal to ``conv(x).flatten(2).transpose(1, 2).contiguous()`` for each conv, without the
    copies: the product ``x^T W^T`` is computed from the transposed view of x, and the backward
    builds the gradient of x channel-first directly (``sum_i W_i^T g_i^T``, accumulated in place),
    where autograd through the transposes would add a strided (B, C, H, W) pass per conv.
    """
    weights = [conv.weight.flatten(1) for conv in convs]
    biases = [conv.bias for conv in convs]
    x, *weights = autocast_inputs(x, *weights)
    biases = autocast_inputs(*biases)
    return _TokenProjections.apply(x.flatten(2), len(convs), *weights, *biases)


def tokens_conv1x1(tokens: Tensor, conv: torch.nn.Conv2d, size: tuple[int, int]) -> Tensor:
    """A 1x1 conv applied to (B, N, d) tokens, returned channel-first (B, out, H, W) with N = H * W.

    ``W @ tokens^T (+ bias)``: the transposed operand is read in place, the output is contiguous.
    """
    weight = conv.weight.flatten(1).expand(tokens.shape[0], -1, -1)
    if conv.bias is None:
        out = torch.bmm(weight, tokens.transpose(1, 2))
    else:
        out = torch.baddbmm(conv.bias.view(1, -1, 1), weight, tokens.transpose(1, 2))
    return out.unflatten(2, size)


def softmax_attention_tokens(query: Tensor, key: Tensor, value: Tensor, scale: float) -> Tensor:
    """``softmax(scale * q k^T) v`` on contiguous tokens: q (B, N, d), k (B, M, d), v (B, M, d) -> (B, N, d).

    ``F.scaled_dot_product_attention``: on the CPU the fused flash kernel (equal head sizes,
    contiguous inputs), never the N x M matrix.
    """
    out = F.scaled_dot_product_attention(query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1), scale=scale)
    return out.squeeze(1)


class _TokenProjections(torch.autograd.Function):
    """x (B, C, N), n weights (d_i, C) and n biases (d_i,) or None -> n tokens (B, N, d_i)."""

    @staticmethod
    def forward(ctx, x: Tensor, n: int, *params: Tensor | None) -> tuple[Tensor, ...]:
        weights, biases = params[:n], params[n:]
        batch = x.shape[0]
        x_t = x.transpose(1, 2)  # (B, N, C), a view
        outs = []
        for weight, bias in zip(weights, biases):
            weight_t = weight.t().expand(batch, -1, -1)
            outs.append(torch.bmm(x_t, weight_t) if bias is None else torch.baddbmm(bias.view(1, 1, -1), x_t, weight_t))
        ctx.save_for_backward(x, *weights)
        ctx.n = n
        ctx.has_bias = [bias is not None for bias in biases]
        return tuple(outs)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: Tensor | None):
        x, *weights = ctx.saved_tensors
        n, batch = ctx.n, x.shape[0]
        need_x = ctx.needs_input_grad[0]
        need_w, need_b = ctx.needs_input_grad[2:2 + n], ctx.needs_input_grad[2 + n:]
        grad_x = None
        grad_w: list[Tensor | None] = [None] * n
        grad_b: list[Tensor | None] = [None] * n
        for i, (weight, grad) in enumerate(zip(weights, grads)):
            if grad is None:
                continue
            if need_x:  # grad_x (B, C, N) += W^T (C, d) @ grad^T (d, N)
                weight_t = weight.t().expand(batch, -1, -1)
                if grad_x is None:
                    grad_x = torch.bmm(weight_t, grad.transpose(1, 2))
                else:
                    grad_x.baddbmm_(weight_t, grad.transpose(1, 2))
            if need_w[i]:  # sum over the batch of grad[b]^T (d, N) @ x[b]^T (N, C)
                grad_w[i] = torch.mm(grad[0].t(), x[0].t())
                for b in range(1, batch):
                    grad_w[i].addmm_(grad[b].t(), x[b].t())
            if ctx.has_bias[i] and need_b[i]:
                grad_b[i] = grad.sum(dim=(0, 1))
        return (grad_x, None, *grad_w, *grad_b)


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
