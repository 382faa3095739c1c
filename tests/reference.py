"""Plain references written from the seeds' formulas: one position at a time, no tricks.

They are slow and obviously right; the operators in lit_seg are tested against them.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def conv1x1(x: Tensor, conv: torch.nn.Conv2d) -> Tensor:
    return F.conv2d(x, conv.weight, conv.bias)


def embed(x: Tensor, module) -> Tensor:
    """A 1x1 conv, or conv (no bias) + BatchNorm + ReLU / LeakyReLU (OCNet's f_key), written out:
    the batch's statistics (biased variance) in training, the running ones in evaluation."""
    if isinstance(module, torch.nn.Conv2d):
        return conv1x1(x, module)
    conv, bn, activation = module
    y = F.conv2d(x, conv.weight)
    if bn.training:
        mean, var = y.mean(dim=(0, 2, 3)), y.var(dim=(0, 2, 3), unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    y = (y - mean.view(1, -1, 1, 1)) / (var.view(1, -1, 1, 1) + bn.eps).sqrt() * bn.weight.view(1, -1, 1, 1)
    y = y + bn.bias.view(1, -1, 1, 1)
    slope = activation.negative_slope if isinstance(activation, torch.nn.LeakyReLU) else 0.0
    return torch.where(y > 0, y, slope * y)


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
    y, f_div_c = non_local_context(x, block)
    z = batch_norm(F.conv2d(y, block.W[0].weight), block.W[1]) + x
    return (z, f_div_c) if return_map else z


def non_local_context(x: Tensor, block) -> tuple[Tensor, Tensor]:
    """:func:`non_local`'s ``y = f g / C`` before W, (B, C', H, W), and ``f / C(x)``, (B, N, M)."""
    batch, channels, height, width = x.shape
    inter = block.inter_channels
    pool = (lambda t: F.max_pool2d(t, 2)) if block.sub_sample else (lambda t: t)
    g_x = pool(conv1x1(x, block.g)).view(batch, inter, -1).permute(0, 2, 1)
    if block.mode == "gaussian":
        theta_x = x.view(batch, channels, -1).permute(0, 2, 1)
        phi_x = pool(x).view(batch, channels, -1)
        f_div_c = F.softmax(torch.matmul(theta_x, phi_x), dim=-1)
    elif block.mode == "embedded_gaussian":
        theta_x = embed(x, block.theta).view(batch, inter, -1).permute(0, 2, 1)
        phi_x = pool(embed(x, block.phi)).view(batch, inter, -1)
        f = torch.matmul(theta_x, phi_x)
        if block.use_scale:
            f = f / inter**0.5
        f_div_c = F.softmax(f, dim=-1)
    elif block.mode == "dot_product":
        theta_x = embed(x, block.theta).view(batch, inter, -1).permute(0, 2, 1)
        phi_x = pool(embed(x, block.phi)).view(batch, inter, -1)
        f = torch.matmul(theta_x, phi_x)
        f_div_c = f / f.size(-1)
    else:  # concatenation, exactly the seed's repeat / cat / conv / ReLU
        theta_x = embed(x, block.theta).view(batch, inter, -1, 1)
        phi_x = pool(embed(x, block.phi)).view(batch, inter, 1, -1)
        h, w = theta_x.size(2), phi_x.size(3)
        concat_feature = torch.cat([theta_x.repeat(1, 1, 1, w), phi_x.repeat(1, 1, h, 1)], dim=1)
        f = F.relu(F.conv2d(concat_feature, block.concat_project.weight)).view(batch, h, w)
        f_div_c = f / f.size(-1)
    y = torch.matmul(f_div_c, g_x).permute(0, 2, 1).contiguous().view(batch, inter, height, width)
    return y, f_div_c


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


# --- EMANet (Li et al. 2019): EM attention, one image at a time ----------------------------------


def _em_one_image(feats: Tensor, bases: Tensor, num_stages: int):
    """The paper's EM on one image's features (C, N) from bases (C, K): each E-step the
    responsibilities of every position over the bases, softmax over the bases; each M-step every
    base the responsibility-weighted mean of the positions, L2-normalised. Returns the last bases,
    responsibilities Z (N, K), Z normalised over the positions and the bases' norms before the
    last normalisation."""
    for _ in range(num_stages):
        z = torch.softmax(feats.T @ bases, dim=1)  # (N, K)
        z_over_positions = z / z.sum(dim=0, keepdim=True)
        unnormalised = feats @ z_over_positions  # (C, K)
        norms = unnormalised.norm(dim=0)
        bases = unnormalised / norms
    return bases, z, z_over_positions, norms


def expectation_maximization_attention(x: Tensor, block) -> dict[str, Tensor]:
    """EMANet's EMA unit as mmseg's EMAHead runs it: ``relu(x + BN(W_out relu(mu Z^T)))`` on
    ``W_in x``, the EM without gradient. Returns ``out`` (B, C, H, W), ``bases`` (the buffer after
    a training forward: moving average towards the batch mean of the images' bases),
    ``map`` (B, N, N): A[i, j] = sum_k Z[i, k] Zbar[j, k] / n_k, with ``recon = feats A^T``, and
    ``recon`` (B, C, N)."""
    feats = conv1x1(x, block.project).detach()
    batch, channels, height, width = feats.shape
    recon, maps, final_bases = [], [], []
    for b in range(batch):
        f = feats[b].reshape(channels, height * width)
        bases, z, z_over_positions, norms = _em_one_image(f, block.bases[0], block.num_stages)
        recon.append(bases @ z.T)
        maps.append((z / norms) @ z_over_positions.T)
        final_bases.append(bases)
    recon = torch.stack(recon)
    mean = torch.stack(final_bases).mean(dim=0)
    new_bases = (1 - block.momentum) * block.bases[0] + block.momentum * mean / mean.norm(dim=0)
    out_conv = batch_norm(F.conv2d(F.relu(recon.reshape(feats.shape)), block.out[0].weight), block.out[1])
    return {"out": F.relu(x + out_conv), "bases": new_bases[None], "map": torch.stack(maps), "recon": recon,
            "feats": feats.flatten(2)}


# --- ANN (Zhu et al. 2019): attention over pyramid-pooled keys -------------------------------------


def pyramid_pool(x: Tensor, scales) -> Tensor:
    """Average over each bin of each s x s grid, bins as PyTorch's adaptive pooling: rows
    floor(a H / s) .. ceil((a + 1) H / s), likewise columns; (B, C, sum s^2), grid after grid,
    row-major."""
    _, _, height, width = x.shape
    pooled = []
    for s in scales:
        for a in range(s):
            top, bottom = math.floor(a * height / s), math.ceil((a + 1) * height / s)
            for c in range(s):
                left, right = math.floor(c * width / s), math.ceil((c + 1) * width / s)
                pooled.append(x[:, :, top:bottom, left:right].mean(dim=(2, 3)))
    return torch.stack(pooled, dim=2)


def _bins(size, scales) -> list[Tensor]:
    """For each pooled key, the (H, W) indicator of its bin divided by the bin's size."""
    height, width = size
    bins = []
    for s in scales:
        for a in range(s):
            top, bottom = math.floor(a * height / s), math.ceil((a + 1) * height / s)
            for c in range(s):
                left, right = math.floor(c * width / s), math.ceil((c + 1) * width / s)
                cell = torch.zeros(height, width, dtype=torch.float64)
                cell[top:bottom, left:right] = 1.0 / ((bottom - top) * (right - left))
                bins.append(cell)
    return bins


def pyramid_key_attention(query_feats: Tensor, key_feats: Tensor, block) -> dict[str, Tensor]:
    """mmseg's ANN SelfAttentionBlock: ``out(softmax(q^T k / sqrt(d)) v)`` with k and v projected and
    then pyramid-pooled. Returns ``out`` (B, out, H, W) and ``map`` (B, N, H', W'): each query's
    weight over the pooled keys, spread over the positions of each key's bin."""
    batch, _, height, width = query_feats.shape
    query = conv_norm_act(query_feats, block.query).flatten(2)  # (B, d, N)
    key = pyramid_pool(conv_norm_act(key_feats, block.key), block.pool_scales)  # (B, d, M)
    value = pyramid_pool(conv1x1(key_feats, block.value), block.pool_scales)
    weights = torch.softmax(query.transpose(1, 2) @ key / block.key_channels**0.5, dim=-1)  # (B, N, M)
    context = (value @ weights.transpose(1, 2)).reshape(batch, -1, height, width)
    bins = torch.stack(_bins(key_feats.shape[-2:], block.pool_scales)).to(weights.dtype)  # (M, H', W')
    return {"out": conv1x1(context, block.out), "map": torch.einsum("bnm,mhw->bnhw", weights, bins)}


def asymmetric_fusion(low: Tensor, high: Tensor, block) -> Tensor:
    """AFNB: 1x1 conv + BN (no activation) on [attention(high queries, low keys), high]."""
    return conv_norm_act(torch.cat([pyramid_key_attention(high, low, block.attention)["out"], high], 1), block.fuse)


def asymmetric_pyramid(x: Tensor, block) -> Tensor:
    """APNB: 1x1 conv + BN + activation on [attention(x, x), x]."""
    return conv_norm_act(torch.cat([pyramid_key_attention(x, x, block.attention)["out"], x], 1), block.fuse)


# --- Hamburger (Geng et al. 2021): NMF by multiplicative updates ---------------------------------


def nmf(x: Tensor, block) -> dict[str, Tensor]:
    """Lee and Seung's multiplicative updates of X ~ D C^T per image, from the block's bases and
    C = softmax(X^T D): ``steps`` updates of C then D, then one more of C; with the one-step
    gradient the ``steps`` updates see X detached. Returns ``out`` D C^T (B, C, H, W) and ``map``
    C C^T (B, N, N)."""
    batch, channels, height, width = x.shape
    outs, maps = [], []
    for b in range(batch):
        data = x[b].reshape(channels, height * width)
        iterated = data.detach() if block.one_step_gradient else data
        bases = block.bases[0]
        coef = torch.softmax(iterated.T @ bases, dim=1)
        for _ in range(block.steps):
            coef = coef * (iterated.T @ bases) / (coef @ (bases.T @ bases) + 1e-6)
            bases = bases * (iterated @ coef) / (bases @ (coef.T @ coef) + 1e-6)
        coef = coef * (data.T @ bases) / (coef @ (bases.T @ bases) + 1e-6)
        outs.append((bases @ coef.T).reshape(channels, height, width))
        maps.append(coef @ coef.T)
    return {"out": torch.stack(outs), "map": torch.stack(maps)}


def norm(x: Tensor, layer) -> Tensor:
    """BatchNorm with batch statistics, or GroupNorm."""
    if isinstance(layer, torch.nn.GroupNorm):
        return F.group_norm(x, layer.num_groups, layer.weight, layer.bias, layer.eps)
    return batch_norm(x, layer)


def hamburger(x: Tensor, block) -> Tensor:
    """``relu(x + norm(W_up NMF(relu(W_low x))))``."""
    ham = nmf(F.relu(conv1x1(x, block.ham_in)), block.ham)["out"]
    return F.relu(x + norm(F.conv2d(ham, block.ham_out[0].weight), block.ham_out[1]))


def conv_norm_act(x: Tensor, layer) -> Tensor:
    """A ConvNormAct layer: conv (no bias) -> BatchNorm with batch statistics (or GroupNorm) -> its
    activation, if any."""
    conv = layer[0]
    y = norm(F.conv2d(x, conv.weight, None, padding=conv.padding, dilation=conv.dilation), layer[1])
    return activation(y, layer[2]) if len(layer) > 2 else y


def _layers(x: Tensor, layers) -> Tensor:
    for layer in layers:
        x = conv_norm_act(x, layer)
    return x


def spatial_gather(x: Tensor, logits: Tensor) -> Tensor:
    """OCR (Yuan et al. 2020): region k of image b is sum_p softmax_p(logits[b, k])[p] * x[b, :, p],
    one region and one position at a time. (B, C, H, W), (B, K, H, W) -> (B, C, K, 1)."""
    batch, _, height, width = x.shape
    images = []
    for b in range(batch):
        regions = []
        for k in range(logits.shape[1]):
            weights = torch.softmax(logits[b, k].reshape(-1), dim=0)
            regions.append(sum(weights[i * width + j] * x[b, :, i, j] for i in range(height) for j in range(width)))
        images.append(torch.stack(regions, dim=1))  # (C, K)
    return torch.stack(images).unsqueeze(-1)


def object_attention(x: Tensor, regions: Tensor, block, return_map: bool = False):
    """OCR's object contextual representation, one pixel at a time: the pixel's query against the K
    region keys (softmax over regions, scaled by key_channels^-0.5), the weighted sum of the region
    values, the output projection, then the fusion of [context, pixel]. ``return_map``: also the
    (B, N, K) pixel-region weights."""
    query = _layers(x, block.pixel_query)  # (B, d, H, W)
    key = _layers(regions, block.region_key)[..., 0]  # (B, d, K)
    value = _layers(regions, block.region_value)[..., 0]
    batch, _, height, width = x.shape
    contexts, maps = [], []
    for b in range(batch):
        pixels, rows = [], []
        for i in range(height):
            for j in range(width):
                weights = torch.softmax(query[b, :, i, j] @ key[b] * block.key_channels**-0.5, dim=0)  # (K,)
                pixels.append(value[b] @ weights)
                rows.append(weights)
        contexts.append(torch.stack(pixels, dim=1).view(-1, height, width))
        maps.append(torch.stack(rows))
    context = _layers(torch.stack(contexts), block.out_project)
    out = _layers(torch.cat([context, x], dim=1), block.fuse)
    return (out, torch.stack(maps)) if return_map else out


def _grouped_relation(y: Tensor, block, same_group) -> tuple[Tensor, Tensor]:
    """ISA's self-attention step on a whole (padded) map: position p attends to the positions q with
    ``same_group(p, q)``. BatchNorm statistics over the whole map. Returns the step's output and its
    (B, N, N) attention matrix (zero outside the groups)."""
    query, key = _layers(y, block.query), _layers(y, block.key)
    value = F.conv2d(y, block.value.weight)
    batch, channels, height, width = y.shape
    positions = [(i, j) for i in range(height) for j in range(width)]
    contexts, matrices = [], []
    for b in range(batch):
        columns, rows = [], []
        for p in positions:
            members = [n for n, q in enumerate(positions) if same_group(p, q)]
            keys = torch.stack([key[b, :, positions[n][0], positions[n][1]] for n in members], dim=1)
            values = torch.stack([value[b, :, positions[n][0], positions[n][1]] for n in members], dim=1)
            weights = torch.softmax(query[b, :, p[0], p[1]] @ keys * block.key_channels**-0.5, dim=0)
            columns.append(values @ weights)
            row = y.new_zeros(len(positions))
            row[members] = weights
            rows.append(row)
        contexts.append(torch.stack(columns, dim=1).view(channels, height, width))
        matrices.append(torch.stack(rows))
    return conv_norm_act(torch.stack(contexts), block.out_project), torch.stack(matrices)


def interlaced_sparse_attention(x: Tensor, block, return_maps: bool = False):
    """ISA (Huang et al. 2021) from its description: zero-pad the map to whole P_h x P_w blocks (the
    odd row/column at the bottom/right); long range: each position attends to the positions with
    its offset inside every block (rows congruent mod P_h, columns mod P_w); short range, on that
    output: to the positions of its own block; crop the padding. ``return_maps``: also the two
    (B, N', N') attention matrices over the padded map's N' positions and the padding (top, left)."""
    block_h, block_w = block.down_factor
    batch, channels, height, width = x.shape
    padded_h, padded_w = -(-height // block_h) * block_h, -(-width // block_w) * block_w
    top, left = (padded_h - height) // 2, (padded_w - width) // 2
    padded = x.new_zeros(batch, channels, padded_h, padded_w)
    padded[:, :, top:top + height, left:left + width] = x
    y, long_map = _grouped_relation(
        padded, block.long_range, lambda p, q: p[0] % block_h == q[0] % block_h and p[1] % block_w == q[1] % block_w)
    z, short_map = _grouped_relation(
        y, block.short_range, lambda p, q: p[0] // block_h == q[0] // block_h and p[1] // block_w == q[1] // block_w)
    out = z[:, :, top:top + height, left:left + width]
    return (out, long_map, short_map, (top, left)) if return_maps else out
