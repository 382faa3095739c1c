"""Plain references of every decode head's training forward, written from the official networks'
descriptions (mmsegmentation's heads, OCRNet's cascade included; the official OCNet networks), on
top of the operator references in ``tests/reference.py``.

Each takes the head only as a container of weights and options, runs in training mode (batch
statistics) without dropout, and returns the head's training outputs ``{"out", ...}``.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_seg.models.heads.ocnet import region_bounds
from tests import reference

conv_norm_act = reference.conv_norm_act  # conv (no bias) -> BatchNorm (batch statistics) -> activation


def classify(x: Tensor, classifier) -> Tensor:
    return F.conv2d(x, classifier.weight, classifier.bias)


def fcn(x: Tensor, head) -> Tensor:
    y = x
    for layer in head.convs:
        y = conv_norm_act(y, layer)
    return conv_norm_act(torch.cat([x, y], 1), head.fuse) if head.fuse is not None else y


def psp(x: Tensor, head) -> Tensor:
    pooled = []
    for scale, stage in zip(head.pool_scales, head.stages):
        p = conv_norm_act(F.adaptive_avg_pool2d(x, scale), stage[1])
        pooled.append(F.interpolate(p, size=x.shape[-2:], mode="bilinear", align_corners=False))
    return conv_norm_act(torch.cat([x, *pooled], 1), head.bottleneck)


def aspp(x: Tensor, head) -> Tensor:
    image = conv_norm_act(x.mean(dim=(2, 3), keepdim=True), head.image_pool[1]).expand(-1, -1, *x.shape[-2:])
    return conv_norm_act(torch.cat([image, *(conv_norm_act(x, b) for b in head.branches)], 1), head.bottleneck)


def conv_block_conv(x: Tensor, head, block) -> Tensor:
    """mmseg's NLHead / CCHead / GCHead / DNLHead: convs[0] -> block -> convs[1] -> conv_cat(x, .)."""
    y = conv_norm_act(block(conv_norm_act(x, head.conv_in)), head.conv_out)
    return conv_norm_act(torch.cat([x, y], 1), head.fuse)


def criss_cross(y: Tensor, head) -> Tensor:
    """R steps of criss-cross attention: the one shared block R times, or each step its own block."""
    blocks = [head.attention] * head.recurrence if head.shared_weights else list(head.attention)
    for a in blocks:
        y = reference.criss_cross_attention(y, a.query, a.key, a.value, a.gamma)
    return y


def disentangled_non_local(x: Tensor, block) -> Tensor:
    """DNL (Yin et al. 2020; mmseg's DisentangledNonLocal2d): x + W(whitened pairwise) + W(unary)."""
    b, _, h, w = x.shape
    theta = reference.conv1x1(x, block.theta).view(b, block.inter_channels, -1)  # (B, C', N)
    phi = reference.conv1x1(x, block.phi).view(b, block.inter_channels, -1)
    g = reference.conv1x1(x, block.g).view(b, block.inter_channels, -1)
    theta = theta - theta.mean(dim=2, keepdim=True)  # whitening: subtract the mean over positions
    phi = phi - phi.mean(dim=2, keepdim=True)
    logits = theta.transpose(1, 2) @ phi  # (B, N, N)
    if block.use_scale:
        logits = logits / block.inter_channels**0.5
    pairwise = F.softmax(logits / block.temperature, dim=-1)
    y = (g @ pairwise.transpose(1, 2)).view(b, -1, h, w)
    unary_weights = F.softmax(reference.conv1x1(x, block.conv_mask).view(b, 1, -1), dim=-1)  # (B, 1, N)
    unary = (g @ unary_weights.transpose(1, 2)).view(b, -1, 1, 1)

    def out_conv(t):
        return reference.batch_norm(F.conv2d(t, block.W[0].weight), block.W[1])

    return x + out_conv(y) + out_conv(unary)


def regional_attention(y: Tensor, block, size: int) -> Tensor:
    """Official Pyramid-OC stage: key/value on the whole map, attention inside each of size x size regions."""
    key = reference.activation(reference.batch_norm(F.conv2d(y, block.f_key[0].weight), block.f_key[1]),
                               block.f_key[2])
    value = reference.conv1x1(y, block.f_value)
    context = torch.zeros_like(value)
    for top, bottom in region_bounds(y.shape[2], size):
        for left, right in region_bounds(y.shape[3], size):
            k = key[:, :, top:bottom, left:right].flatten(2)  # also the query
            v = value[:, :, top:bottom, left:right].flatten(2)
            weights = F.softmax(k.transpose(1, 2) @ k * block.key_channels**-0.5, dim=-1)
            context[:, :, top:bottom, left:right] = (v @ weights.transpose(1, 2)).view(*v.shape[:2], bottom - top,
                                                                                        right - left)
    return reference.conv1x1(context, block.W)


def ocnet(x: Tensor, head) -> Tensor:
    y = conv_norm_act(x, head.conv_in)
    if head.mode == "base":  # BaseOC_Module: conv_bn_dropout(cat(context, feats))
        return conv_norm_act(torch.cat([reference.self_attention(y, head.attention), y], 1), head.fuse)
    if head.mode == "pyramid":  # Pyramid_OC_Module: cat(up_dr(feats), stages...)
        regional = [regional_attention(y, stage, size) for stage, size in zip(head.stages, head.sizes)]
        return conv_norm_act(torch.cat([conv_norm_act(y, head.widen), *regional], 1), head.fuse)
    # ASP_OC_Module on the reduced features: context branch, 1x1 and three dilated 3x3 branches.
    context = conv_norm_act(reference.self_attention(conv_norm_act(y, head.context_in), head.attention),
                            head.context_out)
    return conv_norm_act(torch.cat([context, *(conv_norm_act(y, b) for b in head.branches)], 1), head.fuse)


def danet(x: Tensor, head) -> dict[str, Tensor]:
    branches = {}
    if head.pam is not None:
        pam = reference.position_attention(conv_norm_act(x, head.pam_in), head.pam)
        branches["pam"] = conv_norm_act(pam, head.pam_out)
    if head.cam is not None:
        cam = reference.channel_attention(conv_norm_act(x, head.cam_in), head.cam.beta)
        branches["cam"] = conv_norm_act(cam, head.cam_out)
    outputs = {"out": classify(sum(branches.values()), head.classifier)}
    if len(branches) == 2:
        outputs |= {name: classify(f, head.branch_classifiers[name]) for name, f in branches.items()}
    return outputs


def conv_block_concat(x: Tensor, head, block) -> Tensor:
    """mmseg's EMAHead and the Hamburger authors' HamHead: conv in -> block -> conv out (mmseg's
    ``bottleneck`` / ``align``) -> conv_cat(x, .) when ``concat_input``."""
    y = conv_norm_act(block(conv_norm_act(x, head.conv_in)), head.conv_out)
    return conv_norm_act(torch.cat([x, y], 1), head.fuse) if head.fuse is not None else y


def ann(x: list[Tensor], head) -> Tensor:
    """mmseg's ANNHead: AFNB(low, high) -> (dropout) -> 3x3 bottleneck -> APNB."""
    low, high = x
    fused = reference.asymmetric_fusion(low, high, head.fusion)
    return reference.asymmetric_pyramid(conv_norm_act(fused, head.bottleneck), head.pyramid)


def ocr(x: list[Tensor], head) -> dict[str, Tensor]:
    """mmseg's OCRNet cascade: FCNHead (one conv, no concat) on the first map -> soft object regions;
    OCRHead on the second: bottleneck -> spatial gather -> object attention (with its fusion) -> cls_seg."""
    regions_input, x = x
    logits = classify(fcn(regions_input, head.regions), head.regions.classifier)
    feats = conv_norm_act(x, head.bottleneck)
    if logits.shape[-2:] != feats.shape[-2:]:
        logits = F.interpolate(logits, size=feats.shape[-2:], mode="bilinear", align_corners=False)
    fused = reference.object_attention(feats, reference.spatial_gather(feats, logits), head.object_attention)
    return {"out": classify(fused, head.classifier), "regions": logits}


def isa(x: Tensor, head) -> Tensor:
    """mmseg's ISAHead: in_conv -> ISA (long range, short range) -> out_conv(cat[context, in_conv output])."""
    y = conv_norm_act(x, head.conv_in)
    return conv_norm_act(torch.cat([reference.interlaced_sparse_attention(y, head.attention), y], 1), head.fuse)


def non_local_concat(x: Tensor, head) -> Tensor:
    """NonLocalConcatHead (an intervention, not a paper's head): base-OC's fusion of the non-local
    block's ``W y``, after BatchNorm or (``w_batch_norm=False``) a plain conv with bias."""
    y = conv_norm_act(x, head.conv_in)
    context, _ = reference.non_local_context(y, head.attention)
    w = head.attention.W
    if isinstance(w, torch.nn.Conv2d):
        context = reference.conv1x1(context, w)
    else:
        context = reference.batch_norm(F.conv2d(context, w[0].weight), w[1])
    return conv_norm_act(torch.cat([context, y], 1), head.fuse)


CONTEXT = {
    "FCNHead": fcn,
    "PSPHead": psp,
    "ASPPHead": aspp,
    "NonLocalHead": lambda x, head: conv_block_conv(x, head, lambda y: reference.non_local(y, head.attention)),
    "DNLHead": lambda x, head: conv_block_conv(x, head, lambda y: disentangled_non_local(y, head.attention)),
    "CCHead": lambda x, head: conv_block_conv(x, head, lambda y: criss_cross(y, head)),
    "GCHead": lambda x, head: conv_block_conv(x, head, lambda y: reference.global_context(y, head.attention)),
    "OCHead": ocnet,
    "NonLocalConcatHead": non_local_concat,
    "EMAHead": lambda x, head: conv_block_concat(
        x, head, lambda y: reference.expectation_maximization_attention(y, head.attention)["out"]),
    "ANNHead": ann,
    "HamHead": lambda x, head: conv_block_concat(x, head, lambda y: reference.hamburger(y, head.hamburger)),
    "ISAHead": isa,
}


def head_forward(features: list[Tensor], head) -> dict[str, Tensor]:
    """The head's training outputs on the encoder features, computed by the reference of its class
    (the map ``in_index`` names, or the list of maps for a head that reads several)."""
    index = head.in_index
    x = features[index] if isinstance(index, int) else [features[i] for i in index]
    name = type(head).__name__
    if name == "DAHead":
        return danet(x, head)
    if name == "OCRHead":
        return ocr(x, head)
    return {"out": classify(CONTEXT[name](x, head), head.classifier)}
