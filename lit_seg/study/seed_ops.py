"""The seeds' operators, transcribed from /work/shared/seeds, as the baseline of the cost harness.

Each class is the seed's code with only the changes noted at it (the seeds target PyTorch 0.4 /
CUDA; nothing here is optimised). :func:`ours_from_seed` builds the matching lit_seg operator with
the same configuration and copies the weights, so the two can be compared output for output
(tests/test_benchmark.py) and cost for cost (``lit-seg bench``).

Seed files (the five documents the project was created from):

- ``000_870d905351a793b5.txt``: OCNet ``_SelfAttentionBlock``
- ``001_4d10e04a1ed826b3.txt``: Non-local ``_NonLocalBlockND`` (AlexHex7/Non-local_pytorch)
- ``002_3095017fab2de656.txt``: DANet ``_PositionAttentionModule``, ``_ChannelAttentionModule``
- ``003_0d0b67a7099c02c2.txt``: CCNet ``CrissCrossAttention``
- ``004_b85e438f1e364d30.txt``: GCNet ``GlobalContextBlock``
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import Softmax

from lit_seg.models.attention import (
    ChannelAttention,
    NonLocal2d,
    PositionAttention,
    SelfAttention2d,
)
from lit_seg.models.attention import (
    CrissCrossAttention as OurCrissCrossAttention,
)
from lit_seg.models.attention import (
    GlobalContextBlock as OurGlobalContextBlock,
)

# The OCNet code's version switch (``torch.__version__[:3]``): on any current PyTorch it is
# neither '0.4' nor '0.3', so with scale > 1 the seed returns the context at the pooled size.
torch_ver = torch.__version__[:3]


# --- seed 000 (OCNet) ----------------------------------------------------------------------------


class _SelfAttentionBlock(nn.Module):
    """Seed 000 (000_870d905351a793b5.txt), OCNet's ``_SelfAttentionBlock``.

    Changes: ``InPlaceABNSync(key_channels)`` (a fused BatchNorm + activation, CUDA only) is
    ``BatchNorm2d + ReLU``, the norm and activation of mmseg's and the later OCNet code's block
    and of lit_seg's ``SelfAttention2d``; the deprecated ``nn.init.constant`` is ``constant_``.
    """

    def __init__(self, in_channels, key_channels, value_channels, out_channels=None, scale=1):
        super().__init__()
        self.scale = scale
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.key_channels = key_channels
        self.value_channels = value_channels
        if out_channels == None:  # noqa: E711 (verbatim)
            self.out_channels = in_channels
        self.pool = nn.MaxPool2d(kernel_size=(scale, scale))
        self.f_key = nn.Sequential(
            nn.Conv2d(in_channels=self.in_channels, out_channels=self.key_channels,
                      kernel_size=1, stride=1, padding=0),
            nn.BatchNorm2d(self.key_channels), nn.ReLU(),  # was InPlaceABNSync(self.key_channels)
        )
        self.f_query = self.f_key
        self.f_value = nn.Conv2d(in_channels=self.in_channels, out_channels=self.value_channels,
                                 kernel_size=1, stride=1, padding=0)
        self.W = nn.Conv2d(in_channels=self.value_channels, out_channels=self.out_channels,
                           kernel_size=1, stride=1, padding=0)
        nn.init.constant_(self.W.weight, 0)
        nn.init.constant_(self.W.bias, 0)

    def forward(self, x):
        batch_size, h, w = x.size(0), x.size(2), x.size(3)
        if self.scale > 1:
            x = self.pool(x)

        value = self.f_value(x).view(batch_size, self.value_channels, -1)
        value = value.permute(0, 2, 1)
        query = self.f_query(x).view(batch_size, self.key_channels, -1)
        query = query.permute(0, 2, 1)
        key = self.f_key(x).view(batch_size, self.key_channels, -1)

        sim_map = torch.matmul(query, key)
        sim_map = (self.key_channels**-.5) * sim_map
        sim_map = F.softmax(sim_map, dim=-1)

        context = torch.matmul(sim_map, value)
        context = context.permute(0, 2, 1).contiguous()
        context = context.view(batch_size, self.value_channels, *x.size()[2:])
        context = self.W(context)
        if self.scale > 1:
            if torch_ver == '0.4':
                context = F.upsample(input=context, size=(h, w), mode='bilinear', align_corners=True)
            elif torch_ver == '0.3':
                context = F.upsample(input=context, size=(h, w), mode='bilinear')
        return context


# --- seed 001 (non-local) ------------------------------------------------------------------------


class _NonLocalBlockND(nn.Module):
    """Seed 001 (001_4d10e04a1ed826b3.txt), the embedded Gaussian block of the seed's code base
    (AlexHex7/Non-local_pytorch, ``non_local_embedded_gaussian.py``; the seed's text announces this
    version and then prints the concatenation file, transcribed as
    :class:`_NonLocalBlockNDConcatenation`).

    Same constructor as the seed (2-D only, as the seed's text: the 1-D/3-D branches are cut);
    ``f = softmax(theta_x . phi_x)`` without scaling; ``W`` = conv + BN zero-initialised.
    """

    def __init__(self, in_channels, inter_channels=None, dimension=2, sub_sample=True, bn_layer=True):
        super().__init__()
        assert dimension in [1, 2, 3]
        self.dimension = dimension
        self.sub_sample = sub_sample
        self.in_channels = in_channels
        self.inter_channels = inter_channels
        if self.inter_channels is None:
            self.inter_channels = in_channels // 2
            if self.inter_channels == 0:
                self.inter_channels = 1
        conv_nd = nn.Conv2d
        max_pool_layer = nn.MaxPool2d(kernel_size=(2, 2))
        bn = nn.BatchNorm2d
        self.g = conv_nd(in_channels=self.in_channels, out_channels=self.inter_channels,
                         kernel_size=1, stride=1, padding=0)
        if bn_layer:
            self.W = nn.Sequential(
                conv_nd(in_channels=self.inter_channels, out_channels=self.in_channels,
                        kernel_size=1, stride=1, padding=0),
                bn(self.in_channels)
            )
            nn.init.constant_(self.W[1].weight, 0)
            nn.init.constant_(self.W[1].bias, 0)
        else:
            self.W = conv_nd(in_channels=self.inter_channels, out_channels=self.in_channels,
                             kernel_size=1, stride=1, padding=0)
            nn.init.constant_(self.W.weight, 0)
            nn.init.constant_(self.W.bias, 0)
        self.theta = conv_nd(in_channels=self.in_channels, out_channels=self.inter_channels,
                             kernel_size=1, stride=1, padding=0)
        self.phi = conv_nd(in_channels=self.in_channels, out_channels=self.inter_channels,
                           kernel_size=1, stride=1, padding=0)
        if sub_sample:
            self.g = nn.Sequential(self.g, max_pool_layer)
            self.phi = nn.Sequential(self.phi, max_pool_layer)

    def forward(self, x, return_nl_map=False):
        '''
        :param x: (b, c, t, h, w)
        :param return_nl_map: if True return z, nl_map, else only return z.
        :return:
        '''
        batch_size = x.size(0)
        g_x = self.g(x).view(batch_size, self.inter_channels, -1)
        g_x = g_x.permute(0, 2, 1)

        theta_x = self.theta(x).view(batch_size, self.inter_channels, -1)
        theta_x = theta_x.permute(0, 2, 1)
        phi_x = self.phi(x).view(batch_size, self.inter_channels, -1)
        f = torch.matmul(theta_x, phi_x)
        f_div_C = F.softmax(f, dim=-1)

        y = torch.matmul(f_div_C, g_x)
        y = y.permute(0, 2, 1).contiguous()
        y = y.view(batch_size, self.inter_channels, *x.size()[2:])
        W_y = self.W(y)
        z = W_y + x
        if return_nl_map:
            return z, f_div_C
        return z


class _NonLocalBlockNDConcatenation(nn.Module):
    """Seed 001 (001_4d10e04a1ed826b3.txt) as printed: the concatenation block
    (``non_local_concatenation.py``), verbatim: it builds the (b, 2C', N, M) tensor."""

    def __init__(self, in_channels, inter_channels=None, dimension=2, sub_sample=True, bn_layer=True):
        super().__init__()
        assert dimension in [1, 2, 3]
        self.dimension = dimension
        self.sub_sample = sub_sample
        self.in_channels = in_channels
        self.inter_channels = inter_channels
        if self.inter_channels is None:
            self.inter_channels = in_channels // 2
            if self.inter_channels == 0:
                self.inter_channels = 1
        conv_nd = nn.Conv2d
        max_pool_layer = nn.MaxPool2d(kernel_size=(2, 2))
        bn = nn.BatchNorm2d
        self.g = conv_nd(in_channels=self.in_channels, out_channels=self.inter_channels,
                         kernel_size=1, stride=1, padding=0)
        if bn_layer:
            self.W = nn.Sequential(
                conv_nd(in_channels=self.inter_channels, out_channels=self.in_channels,
                        kernel_size=1, stride=1, padding=0),
                bn(self.in_channels)
            )
            nn.init.constant_(self.W[1].weight, 0)
            nn.init.constant_(self.W[1].bias, 0)
        else:
            self.W = conv_nd(in_channels=self.inter_channels, out_channels=self.in_channels,
                             kernel_size=1, stride=1, padding=0)
            nn.init.constant_(self.W.weight, 0)
            nn.init.constant_(self.W.bias, 0)
        self.theta = conv_nd(in_channels=self.in_channels, out_channels=self.inter_channels,
                             kernel_size=1, stride=1, padding=0)
        self.phi = conv_nd(in_channels=self.in_channels, out_channels=self.inter_channels,
                           kernel_size=1, stride=1, padding=0)
        self.concat_project = nn.Sequential(
            nn.Conv2d(self.inter_channels * 2, 1, 1, 1, 0, bias=False),
            nn.ReLU()
        )
        if sub_sample:
            self.g = nn.Sequential(self.g, max_pool_layer)
            self.phi = nn.Sequential(self.phi, max_pool_layer)

    def forward(self, x, return_nl_map=False):
        '''
        :param x: (b, c, t, h, w)
        :param return_nl_map: if True return z, nl_map, else only return z.
        :return:
        '''
        batch_size = x.size(0)
        g_x = self.g(x).view(batch_size, self.inter_channels, -1)
        g_x = g_x.permute(0, 2, 1)
        # (b, c, N, 1)
        theta_x = self.theta(x).view(batch_size, self.inter_channels, -1, 1)
        # (b, c, 1, N)
        phi_x = self.phi(x).view(batch_size, self.inter_channels, 1, -1)
        h = theta_x.size(2)
        w = phi_x.size(3)
        theta_x = theta_x.repeat(1, 1, 1, w)
        phi_x = phi_x.repeat(1, 1, h, 1)
        concat_feature = torch.cat([theta_x, phi_x], dim=1)
        f = self.concat_project(concat_feature)
        b, _, h, w = f.size()
        f = f.view(b, h, w)
        N = f.size(-1)
        f_div_C = f / N
        y = torch.matmul(f_div_C, g_x)
        y = y.permute(0, 2, 1).contiguous()
        y = y.view(batch_size, self.inter_channels, *x.size()[2:])
        W_y = self.W(y)
        z = W_y + x
        if return_nl_map:
            return z, f_div_C
        return z


# --- seed 002 (DANet) ----------------------------------------------------------------------------


class _PositionAttentionModule(nn.Module):
    """ Position attention module"""
    # Seed 002 (002_3095017fab2de656.txt), verbatim.

    def __init__(self, in_channels, **kwargs):
        super().__init__()
        self.conv_b = nn.Conv2d(in_channels, in_channels // 8, 1)
        self.conv_c = nn.Conv2d(in_channels, in_channels // 8, 1)
        self.conv_d = nn.Conv2d(in_channels, in_channels, 1)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x):
        batch_size, _, height, width = x.size()
        feat_b = self.conv_b(x).view(batch_size, -1, height * width).permute(0, 2, 1)
        feat_c = self.conv_c(x).view(batch_size, -1, height * width)
        attention_s = self.softmax(torch.bmm(feat_b, feat_c))
        feat_d = self.conv_d(x).view(batch_size, -1, height * width)
        feat_e = torch.bmm(feat_d, attention_s.permute(0, 2, 1)).view(batch_size, -1, height, width)
        out = self.alpha * feat_e + x

        return out


class _ChannelAttentionModule(nn.Module):
    """Channel attention module"""
    # Seed 002 (002_3095017fab2de656.txt), verbatim.

    def __init__(self, **kwargs):
        super().__init__()
        self.beta = nn.Parameter(torch.zeros(1))
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x):
        batch_size, _, height, width = x.size()
        feat_a = x.view(batch_size, -1, height * width)
        feat_a_transpose = x.view(batch_size, -1, height * width).permute(0, 2, 1)
        attention = torch.bmm(feat_a, feat_a_transpose)
        attention_new = torch.max(attention, dim=-1, keepdim=True)[0].expand_as(attention) - attention
        attention = self.softmax(attention_new)

        feat_e = torch.bmm(attention, feat_a).view(batch_size, -1, height, width)
        out = self.beta * feat_e + x

        return out


# --- seed 003 (CCNet) ----------------------------------------------------------------------------


def INF(B, H, W, device=None, dtype=None):
    # Seed 003 (003_0d0b67a7099c02c2.txt). The seed builds the tensor with ``.cuda()``, so it cannot
    # run on the CPU; here it is made on the input's device. It also takes the input's dtype:
    # the seed's float32 -inf added to bfloat16 energies promotes them to float32 and the later
    # bmm with the bfloat16 values fails. In float32 this is exactly the seed's tensor.
    return (-torch.diag(torch.tensor(float("inf"), device=device, dtype=dtype).repeat(H), 0)
            .unsqueeze(0).repeat(B * W, 1, 1))


class CrissCrossAttention(nn.Module):
    """ Criss-Cross Attention Module"""
    # Seed 003 (003_0d0b67a7099c02c2.txt), verbatim except that INF gets the input's device and dtype.

    def __init__(self, in_dim):
        super().__init__()
        self.query_conv = nn.Conv2d(in_channels=in_dim, out_channels=in_dim // 8, kernel_size=1)
        self.key_conv = nn.Conv2d(in_channels=in_dim, out_channels=in_dim // 8, kernel_size=1)
        self.value_conv = nn.Conv2d(in_channels=in_dim, out_channels=in_dim, kernel_size=1)
        self.softmax = Softmax(dim=3)
        self.INF = INF
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        m_batchsize, _, height, width = x.size()
        proj_query = self.query_conv(x)
        proj_query_H = (proj_query.permute(0, 3, 1, 2).contiguous().view(m_batchsize * width, -1, height)
                        .permute(0, 2, 1))
        proj_query_W = (proj_query.permute(0, 2, 1, 3).contiguous().view(m_batchsize * height, -1, width)
                        .permute(0, 2, 1))
        proj_key = self.key_conv(x)
        proj_key_H = proj_key.permute(0, 3, 1, 2).contiguous().view(m_batchsize * width, -1, height)
        proj_key_W = proj_key.permute(0, 2, 1, 3).contiguous().view(m_batchsize * height, -1, width)
        proj_value = self.value_conv(x)
        proj_value_H = proj_value.permute(0, 3, 1, 2).contiguous().view(m_batchsize * width, -1, height)
        proj_value_W = proj_value.permute(0, 2, 1, 3).contiguous().view(m_batchsize * height, -1, width)
        energy_H = ((torch.bmm(proj_query_H, proj_key_H) + self.INF(m_batchsize, height, width, x.device, x.dtype))
                    .view(m_batchsize, width, height, height).permute(0, 2, 1, 3))
        energy_W = torch.bmm(proj_query_W, proj_key_W).view(m_batchsize, height, width, width)
        concate = self.softmax(torch.cat([energy_H, energy_W], 3))

        att_H = concate[:, :, :, 0:height].permute(0, 2, 1, 3).contiguous().view(m_batchsize * width, height, height)
        att_W = concate[:, :, :, height:height + width].contiguous().view(m_batchsize * height, width, width)
        out_H = torch.bmm(proj_value_H, att_H.permute(0, 2, 1)).view(m_batchsize, width, -1, height).permute(0, 2, 3, 1)
        out_W = torch.bmm(proj_value_W, att_W.permute(0, 2, 1)).view(m_batchsize, height, -1, width).permute(0, 2, 1, 3)
        return self.gamma * (out_H + out_W) + x


# --- seed 004 (GCNet) ----------------------------------------------------------------------------


class GlobalContextBlock(nn.Module):
    # Seed 004 (004_b85e438f1e364d30.txt), verbatim.
    def __init__(self, in_channels, scale=16):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = self.in_channels // scale

        self.Conv_key = nn.Conv2d(self.in_channels, 1, 1)
        self.SoftMax = nn.Softmax(dim=1)

        self.Conv_value = nn.Sequential(
            nn.Conv2d(self.in_channels, self.out_channels, 1),
            nn.LayerNorm([self.out_channels, 1, 1]),
            nn.ReLU(),
            nn.Conv2d(self.out_channels, self.in_channels, 1),
        )

    def forward(self, x):
        b, c, h, w = x.size()
        # key -> [b, 1, H, W] -> [b, 1, H*W] ->  [b, H*W, 1]
        key = self.SoftMax(self.Conv_key(x).view(b, 1, -1).permute(0, 2, 1).view(b, -1, 1).contiguous())
        query = x.view(b, c, h * w)
        # [b, c, h*w] * [b, H*W, 1]
        concate_QK = torch.matmul(query, key)
        concate_QK = concate_QK.view(b, c, 1, 1).contiguous()
        value = self.Conv_value(concate_QK)
        out = x + value
        return out


# --- recurrence and the mapping to lit_seg's operators ------------------------------------------


class Recurrent(nn.Module):
    """Applies ``block`` ``times`` times with the same weights (CCNet's recurrence R)."""

    def __init__(self, block: nn.Module, times: int) -> None:
        super().__init__()
        self.block = block
        self.times = times

    def forward(self, x):
        for _ in range(self.times):
            x = self.block(x)
        return x


# Each entry: our parameter or buffer name <- the seed's. BatchNorm running means are handled in
# ``ours_from_seed`` (see ``_BIAS_BEFORE_NORM``).
def _bn_pairs(ours: str, seed: str) -> list[tuple[str, str]]:
    return [(f"{ours}.{n}", f"{seed}.{n}") for n in ("weight", "bias", "running_mean", "running_var",
                                                     "num_batches_tracked")]


def _conv_pairs(ours: str, seed: str, bias: bool = True) -> list[tuple[str, str]]:
    return [(f"{ours}.weight", f"{seed}.weight")] + ([(f"{ours}.bias", f"{seed}.bias")] if bias else [])


# Our operators leave out the conv bias in front of a BatchNorm (training-mode BN cancels it).
# The seed's bias is folded into our running mean, so evaluation mode agrees too:
# BN(conv(x) + b) with mean m == BN(conv(x)) with mean m - b.
_BIAS_BEFORE_NORM = {
    _SelfAttentionBlock: [("f_key.1.running_mean", "f_key.0.bias")],
    _NonLocalBlockND: [("W.1.running_mean", "W.0.bias")],
    _NonLocalBlockNDConcatenation: [("W.1.running_mean", "W.0.bias")],
}


def _pooled(name: str, sub_sample: bool) -> str:
    return f"{name}.0" if sub_sample else name


def _build(seed: nn.Module) -> tuple[nn.Module, list[tuple[str, str]]]:
    """Our operator with the seed's configuration, and the (ours, seed) state names to copy."""
    if isinstance(seed, Recurrent):
        ours, pairs = _build(seed.block)
        return Recurrent(ours, seed.times), [(f"block.{o}", f"block.{s}") for o, s in pairs]
    if isinstance(seed, _SelfAttentionBlock):
        ours = SelfAttention2d(seed.in_channels, key_channels=seed.key_channels, value_channels=seed.value_channels,
                               out_channels=seed.out_channels, scale=seed.scale)
        pairs = (_conv_pairs("f_key.0", "f_key.0", bias=False) + _bn_pairs("f_key.1", "f_key.1")
                 + _conv_pairs("f_value", "f_value") + _conv_pairs("W", "W"))
        return ours, pairs
    if isinstance(seed, (_NonLocalBlockND, _NonLocalBlockNDConcatenation)):
        if not isinstance(seed.W, nn.Sequential):
            raise ValueError("NonLocal2d always has W = conv + BatchNorm: the seed needs bn_layer=True")
        if seed.in_channels % seed.inter_channels:
            raise ValueError(f"inter_channels {seed.inter_channels} does not divide in_channels {seed.in_channels}")
        concat = isinstance(seed, _NonLocalBlockNDConcatenation)
        # The seed's embedded Gaussian has no 1/sqrt(C') scaling: use_scale=False.
        ours = NonLocal2d(seed.in_channels, reduction=seed.in_channels // seed.inter_channels,
                          mode="concatenation" if concat else "embedded_gaussian", sub_sample=seed.sub_sample,
                          use_scale=False)
        assert ours.inter_channels == seed.inter_channels
        pairs = (_conv_pairs("g", _pooled("g", seed.sub_sample)) + _conv_pairs("theta", "theta")
                 + _conv_pairs("phi", _pooled("phi", seed.sub_sample))
                 + _conv_pairs("W.0", "W.0", bias=False) + _bn_pairs("W.1", "W.1"))
        if concat:
            pairs.append(("concat_project.weight", "concat_project.0.weight"))
        return ours, pairs
    if isinstance(seed, _PositionAttentionModule):
        ours = PositionAttention(seed.conv_d.in_channels, reduction=8)
        assert ours.query.out_channels == seed.conv_b.out_channels
        pairs = (_conv_pairs("query", "conv_b") + _conv_pairs("key", "conv_c") + _conv_pairs("value", "conv_d")
                 + [("alpha", "alpha")])
        return ours, pairs
    if isinstance(seed, _ChannelAttentionModule):
        return ChannelAttention(), [("beta", "beta")]
    if isinstance(seed, CrissCrossAttention):
        ours = OurCrissCrossAttention(seed.value_conv.in_channels, reduction=8)
        assert ours.query.out_channels == seed.query_conv.out_channels
        pairs = (_conv_pairs("query", "query_conv") + _conv_pairs("key", "key_conv")
                 + _conv_pairs("value", "value_conv") + [("gamma", "gamma")])
        return ours, pairs
    if isinstance(seed, GlobalContextBlock):
        ours = OurGlobalContextBlock(seed.in_channels, ratio=seed.out_channels / seed.in_channels,
                                     pooling="att", fusion=("add",))
        if ours.planes != seed.out_channels:
            raise ValueError(f"GlobalContextBlock: {seed.in_channels} channels give a {seed.out_channels}-wide "
                             f"bottleneck in the seed, {ours.planes} in ours")
        pairs = (_conv_pairs("conv_mask", "Conv_key") + _conv_pairs("channel_add_conv.0", "Conv_value.0")
                 + [("channel_add_conv.1.weight", "Conv_value.1.weight"),
                    ("channel_add_conv.1.bias", "Conv_value.1.bias")]
                 + _conv_pairs("channel_add_conv.3", "Conv_value.3"))
        return ours, pairs
    raise TypeError(f"no lit_seg operator for {type(seed).__name__}")


def parameter_pairs(seed: nn.Module) -> list[tuple[str, str]]:
    """(our name, seed name) of every parameter and buffer :func:`ours_from_seed` copies."""
    return _build(seed)[1]


def ours_from_seed(seed: nn.Module) -> nn.Module:
    """lit_seg's operator with the seed's configuration and weights (same dtype and device).

    The result computes the same function as ``seed`` in training and evaluation mode (up to
    rounding): the seeds' conv bias in front of a BatchNorm, which ours leave out, is folded
    into the running mean. Supports every class above, and :class:`Recurrent` around one.
    """
    ours, pairs = _build(seed)
    reference = next(iter(seed.parameters()), None)
    if reference is not None:
        ours = ours.to(device=reference.device, dtype=reference.dtype)
    ours.train(seed.training)
    ours_state, seed_state = ours.state_dict(), seed.state_dict()
    copied = set()
    with torch.no_grad():
        for o, s in pairs:
            ours_state[o].copy_(seed_state[s])
            copied.add(o)
        inner, prefix = (seed.block, "block.") if isinstance(seed, Recurrent) else (seed, "")
        for o, s in _BIAS_BEFORE_NORM.get(type(inner), []):
            ours_state[prefix + o].sub_(seed_state[prefix + s])
    missing = set(ours_state) - copied
    if missing:
        raise AssertionError(f"not copied from the seed: {sorted(missing)}")
    return ours
