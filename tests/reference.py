"""Plain references written from the seeds' formulas: one position at a time, no tricks.

They are slow and obviously right; the operators in lit_seg are tested against them.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def conv1x1(x: Tensor, conv: torch.nn.Conv2d) -> Tensor:
    return F.conv2d(x, conv.weight, conv.bias)


def criss_cross_attention(x: Tensor, query, key, value, gamma: Tensor) -> Tensor:
    """Seed 003: position (i, j) attends to column j (without itself) and row i (with itself)."""
    q, k, v = conv1x1(x, query), conv1x1(x, key), conv1x1(x, value)
    batch, _, height, width = x.shape
    outputs = []
    for b in range(batch):
        columns = []
        for i in range(height):
            for j in range(width):
                positions = [(r, j) for r in range(height) if r != i] + [(i, c) for c in range(width)]
                keys = torch.stack([k[b, :, r, c] for r, c in positions], dim=1)          # (C', H+W-1)
                values = torch.stack([v[b, :, r, c] for r, c in positions], dim=1)        # (C, H+W-1)
                weights = torch.softmax(q[b, :, i, j] @ keys, dim=0)
                columns.append(values @ weights)
        outputs.append(torch.stack(columns, dim=1).reshape(v.shape[1], height, width))
    return gamma * torch.stack(outputs) + x


def activation(x: Tensor, layer: torch.nn.Module) -> Tensor:
    """ReLU, or leaky ReLU with the layer's slope (InPlaceABN's activation)."""
    return F.leaky_relu(x, layer.negative_slope) if isinstance(layer, torch.nn.LeakyReLU) else F.relu(x)


def batch_norm(x: Tensor, bn: torch.nn.BatchNorm2d) -> Tensor:
    """BatchNorm in training mode: batch statistics, the module's affine weights."""
    return F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)


def non_local(x: Tensor, block, return_map: bool = False):
    """Seed 001 (and the reference code's other three versions), literally: ``x + W(f g / C)``.

    ``block`` is a NonLocal2d; only its weights are used. With ``return_map`` also returns the
    normalised pairwise matrix ``f / C(x)``: (B, N, M).
    """
    batch, channels, height, width = x.shape
    inter = block.inter_channels
    pool = (lambda t: F.max_pool2d(t, 2)) if block.sub_sample else (lambda t: t)
    g_x = pool(conv1x1(x, block.g)).view(batch, inter, -1).permute(0, 2, 1)
    if block.mode == "gaussian":
        theta_x = x.view(batch, channels, -1).permute(0, 2, 1)
        phi_x = pool(x).view(batch, channels, -1)
        f_div_c = F.softmax(torch.matmul(theta_x, phi_x), dim=-1)
    elif block.mode == "embedded_gaussian":
        theta_x = conv1x1(x, block.theta).view(batch, inter, -1).permute(0, 2, 1)
        phi_x = pool(conv1x1(x, block.phi)).view(batch, inter, -1)
        f = torch.matmul(theta_x, phi_x)
        if block.use_scale:
            f = f / inter**0.5
        f_div_c = F.softmax(f, dim=-1)
    elif block.mode == "dot_product":
        theta_x = conv1x1(x, block.theta).view(batch, inter, -1).permute(0, 2, 1)
        phi_x = pool(conv1x1(x, block.phi)).view(batch, inter, -1)
        f = torch.matmul(theta_x, phi_x)
        f_div_c = f / f.size(-1)
    else:  # concatenation, exactly the seed's repeat / cat / conv / ReLU
        theta_x = conv1x1(x, block.theta).view(batch, inter, -1, 1)
        phi_x = pool(conv1x1(x, block.phi)).view(batch, inter, 1, -1)
        h, w = theta_x.size(2), phi_x.size(3)
        concat_feature = torch.cat([theta_x.repeat(1, 1, 1, w), phi_x.repeat(1, 1, h, 1)], dim=1)
        f = F.relu(F.conv2d(concat_feature, block.concat_project.weight)).view(batch, h, w)
        f_div_c = f / f.size(-1)
    y = torch.matmul(f_div_c, g_x).permute(0, 2, 1).contiguous().view(batch, inter, height, width)
    z = batch_norm(F.conv2d(y, block.W[0].weight), block.W[1]) + x
    return (z, f_div_c) if return_map else z


def self_attention(x: Tensor, block, return_map: bool = False):
    """Seed 000 (OCNet ``_SelfAttentionBlock``) with BN + the block's activation as f_key's norm and activation.

    With ``return_map`` also returns the (B, M, M) similarity map at the pooled resolution.
    """
    batch_size, h, w = x.size(0), x.size(2), x.size(3)
    if block.scale > 1:
        x = F.max_pool2d(x, block.scale)
    conv, bn = block.f_key[0], block.f_key[1]
    f_key = activation(batch_norm(F.conv2d(x, conv.weight), bn), block.f_key[2])
    value = conv1x1(x, block.f_value).view(batch_size, block.value_channels, -1).permute(0, 2, 1)
    query = f_key.view(batch_size, block.key_channels, -1).permute(0, 2, 1)
    key = f_key.view(batch_size, block.key_channels, -1)
    sim_map = torch.matmul(query, key)
    sim_map = (block.key_channels**-0.5) * sim_map
    sim_map = F.softmax(sim_map, dim=-1)
    context = torch.matmul(sim_map, value)
    context = context.permute(0, 2, 1).contiguous().view(batch_size, block.value_channels, *x.size()[2:])
    context = conv1x1(context, block.W)
    if block.scale > 1:
        context = F.interpolate(context, size=(h, w), mode="bilinear", align_corners=False)
    return (context, sim_map) if return_map else context


def position_attention(x: Tensor, block, return_map: bool = False):
    """Seed 002 ``_PositionAttentionModule``; with ``return_map`` also the (B, N, N) map S."""
    batch_size, _, height, width = x.size()
    feat_b = conv1x1(x, block.query).view(batch_size, -1, height * width).permute(0, 2, 1)
    feat_c = conv1x1(x, block.key).view(batch_size, -1, height * width)
    attention_s = F.softmax(torch.bmm(feat_b, feat_c), dim=-1)
    feat_d = conv1x1(x, block.value).view(batch_size, -1, height * width)
    feat_e = torch.bmm(feat_d, attention_s.permute(0, 2, 1)).view(batch_size, -1, height, width)
    out = block.alpha * feat_e + x
    return (out, attention_s) if return_map else out


def channel_attention(x: Tensor, beta: Tensor, return_map: bool = False):
    """Seed 002 ``_ChannelAttentionModule``; with ``return_map`` also the (B, C, C) affinity."""
    batch_size, _, height, width = x.size()
    feat_a = x.view(batch_size, -1, height * width)
    feat_a_transpose = x.view(batch_size, -1, height * width).permute(0, 2, 1)
    attention = torch.bmm(feat_a, feat_a_transpose)
    attention_new = torch.max(attention, dim=-1, keepdim=True)[0].expand_as(attention) - attention
    attention = F.softmax(attention_new, dim=-1)
    feat_e = torch.bmm(attention, feat_a).view(batch_size, -1, height, width)
    out = beta * feat_e + x
    return (out, attention) if return_map else out


def _gc_bottleneck(context: Tensor, seq) -> Tensor:
    first, norm, last = seq[0], seq[1], seq[3]
    hidden = F.layer_norm(conv1x1(context, first), norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    return conv1x1(F.relu(hidden), last)


def global_context(x: Tensor, block, return_map: bool = False):
    """Seed 004 ``GlobalContextBlock`` (att pooling, add fusion) with GCNet's avg pooling and mul
    fusion (mul first, then add, as the authors' code). ``return_map``: also the (B, N, 1) weights."""
    b, c, h, w = x.size()
    if block.pooling == "att":
        key = F.softmax(conv1x1(x, block.conv_mask).view(b, 1, -1).permute(0, 2, 1).view(b, -1, 1), dim=1)
    else:
        key = torch.full((b, h * w, 1), 1.0 / (h * w), dtype=x.dtype)
    query = x.view(b, c, h * w)
    context = torch.matmul(query, key).view(b, c, 1, 1)
    out = x
    if "mul" in block.fusion:
        out = out * torch.sigmoid(_gc_bottleneck(context, block.channel_mul_conv))
    if "add" in block.fusion:
        out = out + _gc_bottleneck(context, block.channel_add_conv)
    return (out, key) if return_map else out
