"""Decode heads (every variant of the head list, and a few more options) and GC blocks inside the encoder."""

import copy

import pytest
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.encoders import get_encoder
from segmentation_models_pytorch.encoders.resnet import ResNetEncoder
from torchvision.models.resnet import BasicBlock, Bottleneck

from lit_seg.errors import ConfigError
from lit_seg.models import EncoderDecoder, build_encoder
from lit_seg.models.attention import GlobalContextBlock
from lit_seg.models.gc_backbone import GlobalContextResidual, insert_global_context
from lit_seg.models.heads import HEADS as HEAD_LIST
from lit_seg.models.heads import (
    ANNHead,
    CCHead,
    DAHead,
    DecodeHead,
    EMAHead,
    FCNHead,
    GCHead,
    HamHead,
    ISAHead,
    NonLocalConcatHead,
    NonLocalHead,
    OCRHead,
)
from lit_seg.models.heads.ocnet import region_bounds, regional_attention_map, regional_self_attention
from lit_seg.train.module import SegmentationModule
from tests.conftest import randomize

# smp resnet18 at encoder_depth 3 (the experiments' encoder): input, conv1, layer1, layer2.
CHANNELS = [3, 64, 64, 128]
NUM_CLASSES = 5

# Every variant of the head list, and options the list does not exercise.
HEADS = {name: (variant.head, dict(variant.options)) for name, variant in HEAD_LIST.items()} | {
    "nonlocal_dot_sub": (NonLocalHead, {"mode": "dot_product", "sub_sample": True}),
    "nonlocal_concat": (NonLocalHead, {"mode": "concatenation"}),
    "gc_avg_mul": (GCHead, {"pooling": "avg", "fusion": ("add", "mul")}),
    "ema_no_concat": (EMAHead, {"concat_input": False, "num_stages": 1}),
    # The task suite's interventions (experiments/interventions/): not the papers' networks.
    "ccnet_r2_separate_steps": (CCHead, {"recurrence": 2, "shared_weights": False}),
    "nonlocal_shared_key_query": (NonLocalHead, {"share_key_query": True}),
    "nonlocal_pytorch_init": (NonLocalHead, {"projection_init": "pytorch"}),
    "nonlocal_as_ocnet": (NonLocalHead, {"share_key_query": True, "projection_init": "pytorch"}),
    "nonlocal_ocnet_key": (NonLocalHead, {"share_key_query": True, "projection_init": "pytorch",
                                          "key_query_activation": "relu"}),
    "nonlocal_ocnet_fusion": (NonLocalConcatHead, {"share_key_query": True, "projection_init": "pytorch",
                                                   "key_query_activation": "relu"}),
    "nonlocal_as_oc_base": (NonLocalConcatHead, {"share_key_query": True, "projection_init": "pytorch",
                                                 "key_query_activation": "relu", "w_batch_norm": False,
                                                 "dropout": 0.05}),
    "ema_16_bases": (EMAHead, {"num_bases": 16}),
    "ham_all_steps_batch_norm": (HamHead, {"one_step_gradient": False, "norm": "batch", "concat_input": False}),
    "ocr_one_map": (OCRHead, {"in_index": (-1, -1)}),  # both stages on one map (the built-in experiment's)
    "isa_small_blocks": (ISAHead, {"down_factor": (4, 3)}),  # several blocks and groups on the tests' small maps
}
# Weights that never train, by design: EMA's W_in (mmseg's frozen ema_mid_conv; no gradient flows
# through the EM, so it keeps its initialisation).
FROZEN = {"attention.project.weight", "attention.project.bias"}


def build(name: str, channels: int = 16, **extra):
    head, kwargs = HEADS[name]
    return head(CHANNELS, NUM_CLASSES, channels=channels, **{**kwargs, **extra})


def features(height: int, width: int, batch: int = 2) -> list[torch.Tensor]:
    """Encoder features as the heads see them, every map at the size of an output-stride-8 encoder's
    (a head may read several: ANN the last two)."""
    return [torch.randn(batch, c, height, width) for c in CHANNELS]


@pytest.mark.parametrize("name", HEAD_LIST)
def test_every_weight_of_a_fresh_head_gets_a_gradient(name):
    """With the heads' own initialisation (zero output convs and residual scales, which the test
    below randomises away), every weight gets a gradient within three Adam steps (the first moves
    the zero-initialised ones off zero). Under ReLU, ASP-OC's context branch never did: its weights
    stayed where they started and it trained as a plain ASPP. Biases are left out: a softmax or a
    BatchNorm after them cancels some exactly (key biases, value biases before a BN)."""
    torch.manual_seed(0)
    head = build(name).train()
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    target = torch.randint(0, NUM_CLASSES, (2, 13, 17))
    weights = {pname: p for pname, p in head.named_parameters() if not pname.endswith("bias") and p.requires_grad}
    assert {pname for pname, p in head.named_parameters() if not p.requires_grad} <= FROZEN
    largest = dict.fromkeys(weights, 0.0)
    for _ in range(3):
        outputs = head(features(13, 17))
        loss = sum(head.loss_weights[k] * F.cross_entropy(o, target) for k, o in outputs.items())
        optimizer.zero_grad()
        loss.backward()
        for pname, p in weights.items():
            largest[pname] = max(largest[pname], p.grad.abs().max().item())
        optimizer.step()
    assert [pname for pname, g in largest.items() if g == 0] == []


def test_asp_oc_refuses_relu_and_defaults_to_the_official_leaky_relu():
    head = build("oc_asp")
    assert head.activation == "leaky_relu" and build("oc_base").activation == "relu"
    with pytest.raises(ConfigError, match="leaky_relu"):
        build("oc_asp", activation="relu")


@pytest.mark.parametrize("name", HEADS)
def test_head_outputs_logits_for_every_loss_and_backpropagates(name):
    size = (13, 17)  # H != W, and no grid but 1x1 divides it
    head = randomize(build(name), std=0.2)
    head.train()
    feats = [f.requires_grad_(True) for f in features(*size)]
    outputs = head(feats)
    assert set(outputs) == set(head.loss_weights)
    assert all(o.shape == (2, NUM_CLASSES, *size) for o in outputs.values())
    sum(head.loss_weights[k] * o.square().mean() for k, o in outputs.items()).backward()
    assert feats[-1].grad is not None and feats[-1].grad.abs().sum() > 0
    for pname, p in head.named_parameters():
        if pname in FROZEN:
            assert not p.requires_grad and p.grad is None, pname
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    head.eval()
    with torch.no_grad():
        assert head(feats)["out"].shape == (2, NUM_CLASSES, *size)


@pytest.fixture(scope="module")
def encoder():
    return build_encoder("resnet18", depth=3)


@pytest.mark.parametrize("name", HEADS)
def test_head_builds_from_the_encoder_channels_and_predicts_at_input_resolution(name, encoder):
    head, kwargs = HEADS[name]
    model = EncoderDecoder(encoder, lambda c, n: head(c, n, channels=8, **kwargs), 3, aux_weight=0.4, aux_channels=8)
    index = model.head.in_index  # layer2 of resnet18 (128); ANN also layer1 (64)
    assert model.head.in_channels == (128 if isinstance(index, int) else tuple([3, 64, 64, 128][i] for i in index))
    model.train()
    outputs = model(torch.randn(2, 3, 40, 56))
    assert set(outputs) == set(model.loss_weights) == set(model.head.loss_weights) | {"aux"}
    assert all(o.shape == (2, 3, 40, 56) for o in outputs.values())


@pytest.mark.parametrize("name", ["psp", "aspp", "oc_base", "oc_pyramid", "oc_asp", "dnl", "ann", "ema", "ham", "isa",
                                  "ocr"])
@pytest.mark.parametrize("size", [(2, 3), (3, 5), (7, 4)])
def test_context_heads_work_on_maps_smaller_than_their_pyramids(name, size):
    head = build(name).eval()
    with torch.no_grad():
        assert head(features(*size, batch=1))["out"].shape == (1, NUM_CLASSES, *size)


def test_default_arguments_are_the_papers():
    head = build("psp", channels=512)
    assert head.pool_scales == (1, 2, 3, 6) and head.channels == 512 and head.dropout.p == 0.1
    assert build("aspp").dilations == (1, 12, 24, 36)
    nl = build("nonlocal", channels=512).attention
    assert (nl.mode, nl.inter_channels, nl.sub_sample, nl.use_scale) == ("embedded_gaussian", 256, False, True)
    base = build("oc_base", channels=512)
    assert (base.attention.key_channels, base.attention.value_channels, base.attention.scale) == (256, 256, 1)
    pyramid = build("oc_pyramid", channels=512)
    assert pyramid.sizes == (1, 2, 3, 6) and pyramid.stages[0].value_channels == 512
    assert len(pyramid.conv_in) == 2, "the official Pyramid-OC's first conv has BatchNorm and no activation"
    asp = build("oc_asp", channels=512)
    assert asp.dilations == (12, 24, 36) and asp.attention.scale == 2 and len(asp.branches) == 4
    assert (asp.attention.key_channels, asp.attention.value_channels, asp.fuse[0].in_channels) == (128, 256, 5 * 256)
    # The official OCNet dropout: 0.05 before base-OC's and Pyramid-OC's classifier, 0.1 in ASP-OC.
    assert (base.dropout.p, pyramid.dropout.p, asp.dropout.p) == (0.05, 0.05, 0.1)
    assert build("danet", channels=512).pam.query.out_channels == 64
    gc = build("gc", channels=512).attention
    assert (gc.planes, gc.pooling, gc.fusion) == (128, "att", ("add",))
    dnl = build("dnl", channels=512).attention
    assert (dnl.inter_channels, dnl.temperature, dnl.use_scale) == (256, 0.05, True)
    ema = build("ema", channels=512)
    assert (ema.attention.num_bases, ema.attention.num_stages, ema.attention.momentum) == (64, 3, 0.1)
    assert ema.attention.bases.shape == (1, 512, 64) and ema.fuse is not None  # concat_input
    ann = HEADS["ann"][0]([3, 256, 512, 1024, 2048], 19, channels=512)
    assert ann.in_index == (-2, -1) and ann.in_channels == (1024, 2048) and ann.key_pool_scales == (1, 3, 6, 8)
    assert ann.fusion.attention.key_channels == ann.pyramid.attention.key_channels == 256
    ham = build("ham", channels=512)
    assert (ham.hamburger.ham.rank, ham.hamburger.ham.steps, ham.hamburger.ham.one_step_gradient) == (64, 6, True)
    assert ham.hamburger.ham.bases.shape == (1, 512, 64) and ham.fuse is not None
    norms = [m for m in ham.modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.BatchNorm2d))]
    assert norms and all(isinstance(m, torch.nn.GroupNorm) and m.num_groups == 32 for m in norms)
    ocr = build("ocr", channels=512)
    assert (ocr.object_attention.key_channels, ocr.regions.channels, ocr.regions.in_index) == (256, 256, -2)
    assert len(ocr.regions.convs) == 1 and ocr.regions.fuse is None and ocr.loss_weights == {"out": 1.0, "regions": 0.4}
    assert ocr.dropout.p == ocr.regions.dropout.p == 0.1
    isa = build("isa", channels=512)
    assert (isa.attention.down_factor, isa.attention.long_range.key_channels, isa.dropout.p) == ((8, 8), 256, 0.1)
    assert all(isinstance(m, torch.nn.ReLU) for m in build("ccnet_r2").modules() if "ReLU" in type(m).__name__)
    leaky = [m for m in build("ccnet_r2", activation="leaky_relu").modules() if "ReLU" in type(m).__name__]
    assert leaky and all(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.01 for m in leaky)


def test_in_index_names_as_many_maps_as_the_head_reads():
    with pytest.raises(ConfigError, match="reads one encoder map: in_index must be an integer"):
        FCNHead(CHANNELS, NUM_CLASSES, channels=8, in_index=[-2, -1])
    for bad in (-1, [-3, -2, -1]):
        with pytest.raises(ConfigError, match="reads 2 encoder maps: in_index must list 2 indices"):
            ANNHead(CHANNELS, NUM_CLASSES, channels=8, in_index=bad)
    feats = features(5, 6)
    head = ANNHead(CHANNELS, NUM_CLASSES, channels=8, in_index=[1, 3])
    assert head.in_index == (1, 3) and head.in_channels == (64, 128)
    selected = head.select_inputs(feats)
    assert selected[0] is feats[1] and selected[1] is feats[3] and head.query_size(selected) == (5, 6)
    assert build("fcn").select_inputs(feats) is feats[-1]


def test_ann_reads_a_low_level_map_of_another_size_and_outputs_at_the_high_level_size():
    # The built-in encoder: layer1 (64 channels, stride 4) and layer2 (128, stride 8).
    head = randomize(build("ann"), std=0.2).train()
    feats = features(6, 9)
    feats[-2] = torch.randn(2, 64, 12, 18, requires_grad=True)
    out = head(feats)["out"]
    assert out.shape == (2, NUM_CLASSES, 6, 9)
    out.square().mean().backward()
    assert feats[-2].grad.abs().sum() > 0  # the low-level map reaches the output (AFNB's keys and values)
    maps = head.eval().attention_maps(head.select_inputs(feats), torch.tensor([[5, 8]]))
    assert maps["afnb"].shape == (2, 1, 12, 18) and maps["apnb"].shape == (2, 1, 6, 9)


def test_danet_three_outputs_and_their_loss_weights():
    assert build("danet").loss_weights == {"out": 1.0, "pam": 1.0, "cam": 1.0}
    assert build("danet", pam_weight=0.5, cam_weight=0.25).loss_weights == {"out": 1.0, "pam": 0.5, "cam": 0.25}
    for single in ("danet_pam", "danet_cam"):
        head = build(single, pam_weight=0.5)
        assert head.loss_weights == {"out": 1.0} and not head.branch_classifiers
    assert build("danet_pam").cam is None and build("danet_cam").pam is None
    with pytest.raises(ValueError, match="branches must be one of"):
        build("danet", branches="pam+sam")


def test_danet_fused_output_is_the_classified_sum_of_the_branches():
    head = randomize(build("danet", dropout=0.0), std=0.2).train()  # branch outputs exist in training
    feats = features(6, 7)
    with torch.no_grad():
        outputs = head(feats)
        fused, branches = head.context_with_branches(feats[-1])
        pam, cam = branches["pam"], branches["cam"]
        torch.testing.assert_close(fused, pam + cam)
        torch.testing.assert_close(outputs["out"], head.classifier(pam + cam))
        torch.testing.assert_close(outputs["pam"], head.branch_classifiers["pam"](pam))
        torch.testing.assert_close(outputs["cam"], head.branch_classifiers["cam"](cam))
        head.eval()
        evaluated = head(feats)
        assert set(evaluated) == {"out"}, "evaluation computes only the fused output"
        pam, cam = head.context_with_branches(feats[-1])[1].values()
        torch.testing.assert_close(evaluated["out"], head.classifier(pam + cam))
        assert not torch.allclose(evaluated["out"], head.classifier(pam), atol=1e-3)


def test_a_head_cannot_override_forward():
    with pytest.raises(TypeError, match="overrides DecodeHead.forward"):
        type("Sneaky", (DecodeHead,), {"forward": lambda self, features: {}})


def test_danet_with_aux_head_trains_on_the_weighted_sum_of_all_outputs():
    module = SegmentationModule(head=lambda c, n: DAHead(c, n, channels=16, pam_weight=0.5, cam_weight=0.25),
                                num_classes=4, encoder_name="resnet18", encoder_depth=3, aux_channels=8)
    assert module.model.loss_weights == {"out": 1.0, "pam": 0.5, "cam": 0.25, "aux": 0.4}
    module.train()
    module.log = module.log_dict = lambda *a, **k: None
    images, masks = torch.randn(2, 3, 32, 40), torch.randint(0, 4, (2, 32, 40))
    torch.manual_seed(1)
    loss = module.training_step((images, masks), 0)
    torch.manual_seed(1)
    outputs = module.model(images)
    assert set(outputs) == {"out", "pam", "cam", "aux"}
    ce = {k: F.cross_entropy(v, masks) for k, v in outputs.items()}
    torch.testing.assert_close(loss, ce["out"] + 0.5 * ce["pam"] + 0.25 * ce["cam"] + 0.4 * ce["aux"])
    loss.backward()
    module.eval()
    assert module(images).shape == (2, 4, 32, 40)


def test_outputs_without_a_loss_weight_are_not_in_the_loss():
    module = SegmentationModule(head=lambda c, n: DAHead(c, n, channels=8), num_classes=3,
                                encoder_name="resnet18", encoder_depth=3, aux_weight=0.0)
    module.model.head.__class__ = type("DAHeadOutOnly", (DAHead,), {"loss_weights": property(lambda s: {"out": 1.0})})
    module.train()
    module.log = module.log_dict = lambda *a, **k: None
    images, masks = torch.randn(2, 3, 32, 40), torch.randint(0, 3, (2, 32, 40))
    torch.manual_seed(1)
    loss = module.training_step((images, masks), 0)
    torch.manual_seed(1)
    outputs = module.model(images)
    assert set(outputs) == {"out", "pam", "cam"}
    torch.testing.assert_close(loss, F.cross_entropy(outputs["out"], masks))


def test_ocr_computes_its_first_stage_once_and_feeds_that_prediction_to_the_second():
    """The cascade in one forward, in both modes: the first stage runs once, its logits are the
    ``regions`` training output and the very soft regions the object attention gathers with."""
    head = randomize(build("ocr", dropout=0.0), std=0.2)
    calls = []
    head.regions.convs.register_forward_hook(lambda *args: calls.append(1))
    feats = features(6, 7)
    with torch.no_grad():
        for training in (True, False):
            calls.clear()
            outputs = head.train(training)(feats)
            assert len(calls) == 1 and set(outputs) == ({"out", "regions"} if training else {"out"})
            logits = head.regions.classify(head.regions.context(feats[-2]))
            if training:
                torch.testing.assert_close(outputs["regions"], logits)
            feats4 = head.bottleneck(feats[-1])
            fused = head.object_attention(feats4, head.gather(feats4, logits))
            torch.testing.assert_close(outputs["out"], head.classifier(fused))


def test_ocr_resizes_a_first_stage_of_another_size_and_checks_its_stage():
    head = randomize(build("ocr", dropout=0.0), std=0.2).train()
    feats = features(6, 7)
    feats[-2] = torch.randn(2, CHANNELS[-2], 12, 14)  # stride 4 against the head's stride 8
    with torch.no_grad():
        outputs = head(feats)
        logits = head.regions.classify(head.regions.context(feats[-2]))
    assert outputs["regions"].shape == (2, NUM_CLASSES, 6, 7)
    torch.testing.assert_close(outputs["regions"], F.interpolate(logits, size=(6, 7), mode="bilinear"))
    with pytest.raises(ConfigError, match=r"OCRHead: in_index \(-2, 4\) names no map of the encoder's 4"):
        build("ocr", in_index=(-2, 4))


def test_ocr_model_trains_on_its_output_and_first_stage_without_an_aux_head():
    """As experiments/heads/ocr.yaml sets it (aux_weight 0): mmseg's OCRNet loss, 1.0 x out + 0.4 x regions."""
    module = SegmentationModule(head=lambda c, n: OCRHead(c, n, channels=16, in_index=(-1, -1)), num_classes=4,
                                encoder_name="resnet18", encoder_depth=3, aux_weight=0.0)
    assert module.model.aux_head is None and module.model.loss_weights == {"out": 1.0, "regions": 0.4}
    module.train()
    module.log = module.log_dict = lambda *a, **k: None
    images, masks = torch.randn(2, 3, 32, 40), torch.randint(0, 4, (2, 32, 40))
    torch.manual_seed(1)
    loss = module.training_step((images, masks), 0)
    torch.manual_seed(1)
    outputs = module.model(images)
    assert set(outputs) == {"out", "regions"} and outputs["regions"].shape == (2, 4, 32, 40)
    torch.testing.assert_close(loss, F.cross_entropy(outputs["out"], masks) + 0.4 * F.cross_entropy(outputs["regions"],
                                                                                                     masks))


def test_region_bounds_cover_the_map_with_near_equal_non_empty_regions():
    assert region_bounds(13, 6) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 13)]
    assert [b - a for a, b in region_bounds(17, 6)] == [2, 3, 3, 3, 3, 3]
    assert region_bounds(4, 6) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert region_bounds(5, 1) == [(0, 5)]


@pytest.mark.parametrize("shape", [(13, 17), (4, 7), (12, 12)])
def test_pyramid_oc_regions_equal_the_plain_block_on_each_region(shape):
    head = randomize(build("oc_pyramid"), std=0.3).eval()
    y = torch.randn(2, 16, *shape)
    with torch.no_grad():
        for block, size in zip(head.stages, head.sizes):
            out = regional_self_attention(block, y, size)
            for top, bottom in region_bounds(shape[0], size):
                for left, right in region_bounds(shape[1], size):
                    # eval: the projections' BatchNorm is per position, so a crop sees the same keys.
                    region = (slice(None), slice(None), slice(top, bottom), slice(left, right))
                    torch.testing.assert_close(out[region], block(y[region]), msg=f"{size}: {region}")


def test_pyramid_oc_attends_within_regions_only():
    head = randomize(build("oc_pyramid"), std=0.3).eval()
    block = head.stages[2]  # 3x3 regions: rows 0-3, 4-7, 8-12
    y = torch.randn(1, 16, 13, 17)
    with torch.no_grad():
        out = regional_self_attention(block, y, 3)
        # A change outside a region does not reach it.
        y2 = y.clone()
        y2[:, :, 9:, :] += 5.0
        torch.testing.assert_close(regional_self_attention(block, y2, 3)[:, :, :8], out[:, :, :8])
        # One region: the whole map, the plain block.
        torch.testing.assert_close(regional_self_attention(head.stages[0], y, 1), head.stages[0](y))


def test_pyramid_oc_attention_map_is_what_the_forward_uses():
    head = randomize(build("oc_pyramid"), std=0.3).eval()
    block = head.stages[3]  # 6x6 regions of a 13x17 map
    y = torch.randn(2, 16, 13, 17)
    queries = torch.tensor([[0, 0], [12, 16], [6, 9], [10, 2]])
    with torch.no_grad():
        maps = regional_attention_map(block, y, 6, queries)
        context = torch.einsum("bqhw,bchw->bcq", maps, block.f_value(y))
        want = block.W(context.unsqueeze(-1)).squeeze(-1)
        got = regional_self_attention(block, y, 6)[:, :, queries[:, 0], queries[:, 1]]
    torch.testing.assert_close(got, want)
    # Query (12, 16) lies in the last region: rows 10..12, cols 14..16.
    assert (maps[:, 1, :10] == 0).all() and (maps[:, 1, :, :14] == 0).all() and (maps[:, 1, 10:, 14:] > 0).all()


ATTENTION = {
    # name: (expected map names, shape of the maps for a 13x17 map, whether they are a softmax: sum to 1)
    "nonlocal": ({"nonlocal"}, (13, 17), True),
    "nonlocal_dot_sub": ({"nonlocal"}, (6, 8), False),
    "oc_base": ({"oc"}, (13, 17), True),
    "oc_asp": ({"oc"}, (6, 8), True),
    "dnl": ({"pairwise", "unary"}, (13, 17), True),
    "oc_pyramid": ({"pyramid_1", "pyramid_2", "pyramid_3", "pyramid_6"}, (13, 17), True),
    "danet": ({"pam"}, (13, 17), True),
    "danet_pam": ({"pam"}, (13, 17), True),
    "danet_cam": (set(), None, True),
    "gc": ({"gc"}, (13, 17), True),
    "gc_avg_mul": ({"gc"}, (13, 17), True),
    "ann": ({"afnb", "apnb"}, (13, 17), True),
    "ema": ({"ema"}, (13, 17), False),  # not normalised (tested against the reference in test_operators)
    "ham": ({"ham"}, (13, 17), False),
    "psp": (set(), None, True),
    "aspp": (set(), None, True),
    "ocr": ({"ocr"}, (13, 17), True),
    "ocr_one_map": ({"ocr"}, (13, 17), True),
    # Weights on the zero padding (13 x 17 is no multiple of the blocks) lie at no image position:
    # the maps sum to less than 1 (tests/unit/test_operators.py checks them against the dense matrices).
    "isa": ({"long_range", "short_range", "composed"}, (13, 17), "at most 1"),
    "isa_small_blocks": ({"long_range", "short_range", "composed"}, (13, 17), "at most 1"),
}


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_maps_shapes_and_normalisation(name):
    names, shape, softmax = ATTENTION[name]
    head = randomize(build(name), std=0.3).eval()
    x = head.select_inputs(features(13, 17))
    queries = torch.tensor([[0, 0], [12, 16], [5, 9]])
    with torch.no_grad():
        maps = head.attention_maps(x, queries)
    assert set(maps) == names
    for key, value in maps.items():
        assert value.shape == (2, 3, *shape), key
        if softmax == "at most 1":
            assert (value >= 0).all() and (value.sum(dim=(-2, -1)) <= 1 + 1e-5).all(), key
            continue
        assert (value >= 0).all() or name.startswith("nonlocal_dot"), key
        if softmax:
            torch.testing.assert_close(value.sum(dim=(-2, -1)), torch.ones(2, 3), msg=key)
    if names:
        with pytest.raises(ValueError, match="queries must lie inside"):
            head.attention_maps(x, torch.tensor([[13, 0]]))


def test_gc_head_map_is_the_same_for_every_query():
    head = randomize(build("gc"), std=0.3).eval()
    with torch.no_grad():
        maps = head.attention_maps(features(5, 6)[-1], torch.tensor([[0, 0], [4, 5]]))["gc"]
    torch.testing.assert_close(maps[:, 0], maps[:, 1])


# GC blocks in the encoder (GCNet's own placement).

def _gc_modules(encoder):
    return {name for name, m in encoder.named_modules() if isinstance(m, GlobalContextResidual)}


def bottleneck_resnet(depth: int = 5) -> ResNetEncoder:
    """A small smp ResNet encoder of Bottleneck blocks (ResNet-50's kind; resnet50 itself is slow to build)."""
    return ResNetEncoder(out_channels=[3, 64, 256, 512, 1024, 2048], depth=depth, block=Bottleneck, layers=[1, 2, 1, 1])


@pytest.mark.parametrize("name,stages,depth", [("bottleneck", (2, 3, 4), 5), ("resnet18", (2,), 3)])
def test_gc_backbone_starts_as_the_plain_encoder(name, stages, depth, encoder):
    # resnet18 at depth 3: BasicBlocks of the real (output stride 8) encoder, layer2.0 with a
    # downsampling shortcut; the small Bottleneck ResNet: stages c3-c5 as GCNet.
    plain = (bottleneck_resnet(depth) if name == "bottleneck" else encoder).eval()
    wrapped = insert_global_context(copy.deepcopy(plain), stages).eval()
    x = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        for a, b in zip(plain(x), wrapped(x)):
            assert torch.equal(a, b)
        # Once trained (here: random weights) the blocks change the features.
        randomize(wrapped.layer2[0].gc, std=0.5)
        assert not torch.equal(plain(x)[3], wrapped(x)[3])


def test_gc_backbone_wraps_every_block_of_the_chosen_stages():
    encoder = insert_global_context(bottleneck_resnet())
    assert _gc_modules(encoder) == {"layer2.0", "layer2.1", "layer3.0", "layer4.0"}
    gc = encoder.layer3[0].gc
    assert isinstance(gc, GlobalContextBlock) and gc.planes == 1024 // 16 and gc.fusion == ("add",)
    resnet18 = ResNetEncoder(out_channels=[3, 64, 64, 128, 256, 512], block=BasicBlock, layers=[2, 2, 2, 2])
    encoder18 = insert_global_context(resnet18, stages=[1, 4], ratio=1 / 4)
    assert _gc_modules(encoder18) == {"layer1.0", "layer1.1", "layer4.0", "layer4.1"}
    assert encoder18.layer4[1].gc.planes == 512 // 4


def test_gc_backbone_through_the_module_option():
    module = SegmentationModule(num_classes=3, encoder_name="resnet18", encoder_depth=3, aux_weight=0.0,
                                head=lambda c, n: FCNHead(c, n, channels=8),
                                encoder_gc_stages=[2])
    assert _gc_modules(module.model.encoder) == {"layer2.0", "layer2.1"}
    assert module.hparams.encoder_gc_stages == [2]
    assert module(torch.randn(2, 3, 32, 40)).shape == (2, 3, 32, 40)
    assert not _gc_modules(SegmentationModule(num_classes=3, encoder_name="resnet18", encoder_depth=3).model.encoder)


@pytest.mark.parametrize(
    "name,stages,depth,message",
    [
        ("mobilenet_v2", (2,), 5, "need a ResNet encoder .*got MobileNetV2Encoder"),
        ("tu-resnet10t", (2,), 5, "need a ResNet encoder .*got TimmUniversalEncoder"),
        ("resnet18", (2, 3), 3, r"\[1, 2\] at encoder_depth 3"),
        ("resnet18", (0,), 5, r"\[1, 2, 3, 4\] at encoder_depth 5"),
    ],
)
def test_gc_backbone_bad_encoder_or_stage_is_a_clear_error(name, stages, depth, message):
    # Built without build_encoder's stride check (a forward pass): only the class matters here.
    if name == "resnet18":
        encoder = ResNetEncoder(out_channels=[3, 64, 64, 128, 256, 512], depth=depth, block=BasicBlock, layers=[2] * 4)
    else:
        encoder = get_encoder(name, depth=depth, weights=None)
    with pytest.raises(ConfigError, match=message) as info:
        insert_global_context(encoder, stages)
    assert "\n" not in str(info.value)


def test_the_interventions_change_what_they_name_and_nothing_else():
    """A separate block per CCNet step; one module for non-local's queries and keys; PyTorch's
    default initialisation for its projections (OCNet's)."""
    shared, separate = build("ccnet_r2"), build("ccnet_r2_separate_steps")
    assert len(separate.attention) == 2 and separate.step(0) is not separate.step(1)
    assert shared.step(0) is shared.step(1) is shared.attention
    params = sum(p.numel() for p in shared.attention.parameters())
    assert sum(p.numel() for p in separate.parameters()) == sum(p.numel() for p in shared.parameters()) + params
    plain, tied = build("nonlocal"), build("nonlocal_shared_key_query")
    assert tied.attention.phi is tied.attention.theta and plain.attention.phi is not plain.attention.theta
    theta = sum(p.numel() for p in plain.attention.theta.parameters())
    assert sum(p.numel() for p in tied.parameters()) == sum(p.numel() for p in plain.parameters()) - theta
    torch.manual_seed(0)
    mmcv = build("nonlocal", channels=256).attention.theta.weight.std().item()
    torch.manual_seed(0)
    default = build("nonlocal_as_ocnet", channels=256).attention.theta.weight.std().item()
    assert abs(mmcv - 0.01) < 1e-3 and default > 0.02  # Kaiming uniform: (1/3)^0.5 / sqrt(256) ~ 0.036
    with pytest.raises(ConfigError, match="projection_init must be"):
        build("nonlocal", projection_init="xavier")


def test_nonlocal_configured_as_base_oc_computes_base_oc():
    """nonlocal_as_oc_base is base-OC's network built from NonLocal2d: given OCHead's weights
    (f_key as theta = phi, f_value as g), the same logits and the same gradients' shapes, in
    training and evaluation. Only the order in which a seed draws their weights differs."""
    torch.manual_seed(0)
    oc = randomize(build("oc_base"))
    nl = build("nonlocal_as_oc_base")
    names = {"attention.f_key": "attention.theta", "attention.f_value": "attention.g"}
    state = {}
    for key, value in oc.state_dict().items():
        for old, new in names.items():
            key = key.replace(old, new) if key.startswith(old + ".") else key
        state[key] = value
        if key.startswith("attention.theta."):  # phi is theta: the one module under both names
            state[key.replace("theta", "phi")] = value
    nl.load_state_dict(state)
    assert sum(p.numel() for p in nl.parameters()) == sum(p.numel() for p in oc.parameters())
    features = [torch.randn(2, c, 6, 7) for c in CHANNELS]
    for mode in ("train", "eval"):
        oc.train(mode == "train")
        nl.train(mode == "train")
        torch.manual_seed(1)
        expected = oc(features)["out"]
        torch.manual_seed(1)
        torch.testing.assert_close(nl(features)["out"], expected, rtol=1e-5, atol=1e-5)


def test_nonlocal_in_base_oc_head_concatenates_the_blocks_context_with_its_input():
    """NonLocalConcatHead: base-OC's fusion, ``fuse(cat(BN(W y), f))`` with f the conv in's output
    and ``BN(W y)`` the block's output less its residual; no conv out, no encoder map in the fuse."""
    torch.manual_seed(0)
    head = randomize(build("nonlocal_ocnet_fusion")).eval()
    x = torch.randn(2, CHANNELS[-1], 6, 7)
    features = head.conv_in(x)
    expected = head.fuse(torch.cat([head.attention(features) - features, features], dim=1))
    torch.testing.assert_close(head.context(x), expected, rtol=1e-5, atol=1e-5)
    assert not hasattr(head, "conv_out") and head.fuse[0].kernel_size == (1, 1)
    assert head.fuse[0].in_channels == 2 * head.channels
    assert head.attention.phi is head.attention.theta
    # base-OC's W: a plain 1x1 conv with bias started at zero, no BatchNorm; a fresh head adds no context.
    plain = build("nonlocal_as_oc_base")
    assert isinstance(plain.attention.W, torch.nn.Conv2d) and plain.attention.W.bias is not None
    assert not plain.attention.W.weight.any() and not plain.attention.W.bias.any()
    features = plain.eval().conv_in(x)
    assert not plain.attention.W(plain.attention.context(features)).any()
    torch.manual_seed(0)
    plain = randomize(plain)
    features = plain.conv_in(x)
    expected = plain.fuse(torch.cat([plain.attention.W(plain.attention.context(features)), features], dim=1))
    torch.testing.assert_close(plain.context(x), expected, rtol=1e-5, atol=1e-5)
