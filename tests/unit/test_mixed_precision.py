"""bf16 autocast and channels_last work for every head (what a GPU run uses), checked on the CPU.

Our custom autograd Functions (criss-cross aggregation, chunked attention, token projections,
channel attention, GC pooling) see mixed dtypes under autocast and run their backward outside
it; these tests fail if one of them does not handle that.
"""

import pytest
import torch

from lit_seg.models.heads import CCHead, FCNHead
from tests.conftest import randomize
from tests.unit.test_heads import CHANNELS, HEADS, NUM_CLASSES, features

ALL_HEADS = {**HEADS, "fcn": (FCNHead, {}), "ccnet_r2": (CCHead, {"recurrence": 2})}


def _forward_backward(head, feats, autocast: bool):
    feats = [f.detach().clone().requires_grad_(True) for f in feats]
    head.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        outputs = head(feats)
    loss = sum(o.float().square().mean() for o in outputs.values())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in head.named_parameters() if p.grad is not None}
    return outputs, feats[-1].grad, grads


@pytest.mark.parametrize("name", ALL_HEADS)
def test_head_trains_under_bf16_autocast_close_to_float32(name):
    cls, kwargs = ALL_HEADS[name]
    torch.manual_seed(0)
    # Eval mode: in training mode BatchNorm over PSP's pooled 1x1 maps normalises two values
    # (batch 2), which turns rounding differences into sign flips; the backward runs all the same.
    head = randomize(cls(CHANNELS, NUM_CLASSES, channels=16, **kwargs), std=0.1).eval()
    feats = features(12, 10)
    ref_out, ref_grad_x, ref_grads = _forward_backward(head, feats, autocast=False)
    out, grad_x, grads = _forward_backward(head, feats, autocast=True)
    assert out["out"].dtype == torch.bfloat16  # the head really ran in low precision
    for key in ref_out:
        error = float((out[key].float() - ref_out[key]).abs().max() / ref_out[key].abs().max())
        assert error < 0.05, (key, error)
    assert torch.isfinite(grad_x).all()
    assert torch.nn.functional.cosine_similarity(grad_x.flatten(), ref_grad_x.flatten(), dim=0) > 0.98
    assert set(grads) == set(ref_grads)
    for pname, grad in grads.items():
        assert torch.isfinite(grad).all(), pname


@pytest.mark.parametrize("name", ALL_HEADS)
def test_head_accepts_channels_last_features(name):
    cls, kwargs = ALL_HEADS[name]
    torch.manual_seed(0)
    head = randomize(cls(CHANNELS, NUM_CLASSES, channels=16, **kwargs), std=0.1).eval()  # no dropout
    feats = features(12, 10)
    ref = head(feats)["out"]
    head = head.to(memory_format=torch.channels_last)
    last = [f.contiguous(memory_format=torch.channels_last) for f in feats]
    out = head(last)["out"]
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    out.square().mean().backward()


def test_module_channels_last_runs_the_same_model_in_nhwc():
    from lit_seg.train.module import SegmentationModule

    def build(channels_last: bool) -> SegmentationModule:
        torch.manual_seed(0)
        return SegmentationModule(head=lambda ch, n: CCHead(ch, n, channels=16, recurrence=2), num_classes=4,
                                  encoder_name="resnet18", encoder_depth=3, aux_weight=0.0,
                                  channels_last=channels_last).eval()

    plain, nhwc = build(False), build(True)
    conv = nhwc.model.encoder.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    images, masks = torch.randn(2, 3, 64, 48), torch.zeros(2, 64, 48, dtype=torch.long)
    batch = nhwc.on_after_batch_transfer((images, masks), 0)
    assert batch[0].is_contiguous(memory_format=torch.channels_last) and batch[1] is masks
    assert plain.on_after_batch_transfer((images, masks), 0)[0] is images
    with torch.no_grad():
        torch.testing.assert_close(nhwc(batch[0]), plain(images), rtol=1e-4, atol=1e-4)


def test_cpu_autocast_runs_chunked_attention_and_criss_cross_in_float32():
    """The CPU's bf16 batched products on these layouts are many times slower than float32 (docs/notes/history.md,
    "2026-12-01: bf16 on the CPU"): under CPU autocast the chunked attention (DANet's PAM, Pyramid-OC) and the
    criss-cross aggregation run in float32, so they give the float32 result of their inputs."""
    from lit_seg.models.attention import CrissCrossAttention
    from lit_seg.models.attention.functional import softmax_attention

    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 30), torch.randn(2, 4, 40), torch.randn(2, 8, 40)  # widths differ: chunked
    ref = softmax_attention(q, k, v, 0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = softmax_attention(q, k, v, 0.5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)

    block = CrissCrossAttention(16).eval()
    with torch.no_grad():
        block.gamma.fill_(0.7)
    x = torch.randn(2, 16, 9, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(x)
        q, k, value = block.query(x), block.key(x), block.value(x)  # the projections: bf16
    assert q.dtype == torch.bfloat16 and out.dtype == torch.float32
    # The attention in float32 on the bf16 projections.
    weights = block._weights_of(q.float(), k.float())
    column, row = weights[..., :9], weights[..., 9:]
    v = value.float()
    context = torch.einsum("bijk,bckj->bcij", column, v) + torch.einsum("bijk,bcik->bcij", row, v)
    torch.testing.assert_close(out, x + 0.7 * context, rtol=1e-5, atol=1e-5)
