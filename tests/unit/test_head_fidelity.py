"""Every head is the network it names: the same numbers in training and in evaluation, the
official head's parameter count at the recipe's size, and its forward and gradients equal to a
plain reference written from the official network's description (float64)."""

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from lit_seg.models import EncoderDecoder, build_encoder
from lit_seg.models.heads import HEADS
from tests import reference_heads
from tests.conftest import randomize
from tests.unit.test_heads import HEADS as HEADS_AND_OPTIONS
from tests.unit.test_heads import NUM_CLASSES

CHANNELS = [3, 8, 12]  # a small encoder: the head reads the last map


def build(name: str, **extra) -> nn.Module:
    head, options = HEADS_AND_OPTIONS[name]
    return head(CHANNELS, NUM_CLASSES, channels=16, **{**options, **extra})


def frozen_statistics(module: nn.Module) -> nn.Module:
    """Training mode, except that dropout is off and BatchNorm uses (and keeps) its running statistics."""
    module.train()
    for m in module.modules():
        if isinstance(m, (_BatchNorm, nn.Dropout, nn.Dropout2d)):
            m.eval()
    return module


@pytest.mark.parametrize("name", HEADS_AND_OPTIONS)
def test_evaluation_output_equals_the_training_output(name):
    """eval() returns the very ``out`` that training optimises, in every head and mode."""
    head = randomize(build(name, dropout=0.3), std=0.2)
    with torch.no_grad():  # running statistics that are not the identity
        for m in head.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    feats = [torch.randn(2, c, 7, 9) for c in CHANNELS]
    with torch.no_grad():
        evaluated = head.eval()(feats)
        trained = frozen_statistics(head)(feats)
    assert set(evaluated) == {"out"}
    assert set(trained) == set(head.loss_weights)
    torch.testing.assert_close(evaluated["out"], trained["out"], rtol=1e-5, atol=1e-5)
    assert evaluated["out"].abs().max() > 1e-3  # not a trivially equal zero map


@pytest.mark.parametrize("name", ["danet", "ccnet_r2", "oc_asp", "ocr", "ema", "ann", "ham"])
def test_the_model_evaluates_the_head_output_it_trains(name):
    """The same through EncoderDecoder (encoder, aux head, upsampling), as validation runs it."""
    model = EncoderDecoder(build_encoder("resnet18", depth=3), lambda c, n: HEADS[name].build(c, n, channels=8),
                           NUM_CLASSES, aux_weight=0.4, aux_channels=8)
    randomize(model.head, std=0.2)
    images = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        model.train()
        model(images)  # running statistics from a real batch
        evaluated = model.eval()(images)
        trained = frozen_statistics(model)(images)
    assert set(evaluated) == {"out"} and set(trained) == set(model.loss_weights)
    torch.testing.assert_close(evaluated["out"], trained["out"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", HEADS_AND_OPTIONS)
def test_head_matches_the_plain_reference_forward_and_gradients(name):
    head = randomize(build(name, dropout=0.0), std=0.25).double().train()
    # Every encoder map (a head may read several, ANN two); the reference runs first, since a
    # training forward may update buffers (EMA's bases) after computing its output.
    feats = [torch.randn(2, c, 6, 7, dtype=torch.float64, requires_grad=True) for c in CHANNELS]
    feats_ref = [f.detach().clone().requires_grad_(True) for f in feats]
    want = reference_heads.head_forward(feats_ref, head)
    got = head(feats)
    assert set(got) == set(want) == set(head.loss_weights)
    for key in want:
        torch.testing.assert_close(got[key], want[key], msg=key)
    grads = {key: torch.randn_like(value) for key, value in want.items()}
    # Trainable weights only: EMA's W_in is frozen (requires_grad=False), as mmseg's ema_mid_conv.
    named = [(pname, p) for pname, p in head.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    got_grads = torch.autograd.grad([got[k] for k in want], [*feats, *params], [grads[k] for k in want],
                                    allow_unused=True)
    want_grads = torch.autograd.grad([want[k] for k in want], [*feats_ref, *params], [grads[k] for k in want],
                                     allow_unused=True)
    inputs = [(f"input {i}", f) for i, f in enumerate(feats)]
    for (pname, _), g, w in zip([*inputs, *named], got_grads, want_grads, strict=True):
        if w is None:
            assert g is None or not g.any(), pname
            continue
        torch.testing.assert_close(g, w, msg=pname)
    assert any(g is not None and g.any() for g in got_grads[:len(feats)])


# --- parameter counts at the recipe's size (ResNet-50 D8: 2048 input channels, 512 wide, 19 classes)


def conv(cin: int, cout: int, k: int = 1, bias: bool = False) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def bn(c: int) -> int:
    return 2 * c


CLS = conv(512, 19, bias=True)  # conv_seg
FCN2 = (conv(2048, 512, 3) + bn(512) + conv(512, 512, 3) + bn(512)
        + conv(2048 + 512, 512, 3) + bn(512))  # convs + conv_cat
NL = 3 * conv(512, 256, bias=True) + conv(256, 512) + bn(512)  # g, theta, phi; conv_out with norm
OC_SELF_ATTENTION = {  # f_key (conv + ABN), f_value, W
    "base": conv(512, 256) + bn(256) + conv(512, 256, bias=True) + conv(256, 512, bias=True),
    "pyramid": conv(512, 256) + bn(256) + conv(512, 512, bias=True) + conv(512, 512, bias=True),
    "asp": conv(256, 128) + bn(128) + conv(256, 256, bias=True) + conv(256, 256, bias=True),
}

# Every count is read off the layer list of the code named beside it. mmsegmentation 1.x:
# mmseg/models/decode_heads/<file>, its ConvModules bias-free before a norm. The official OCNet
# networks (openseg-group/OCNet.pytorch, network/resnet101_{base,pyramid,asp}_oc.py and
# oc_module/*.py) keep the conv biases before InPlaceABNSync; the norm's mean subtraction cancels
# them, so ours leave them out: the counts below are the official layer lists without those
# biases (named in each line), a counting difference, not a different network.
OFFICIAL_PARAMS = {
    "fcn": FCN2 + CLS,  # fcn_head.py, num_convs=2, concat_input=True
    # psp_head.py: 4 x (pool -> 1x1 ConvModule), bottleneck 3x3 on the concat
    "psp": 4 * (conv(2048, 512) + bn(512)) + conv(2048 + 4 * 512, 512, 3) + bn(512) + CLS,
    # aspp_head.py: image pool 1x1, dilation 1 as 1x1, 12/24/36 as 3x3, bottleneck 3x3
    "aspp": 2 * (conv(2048, 512) + bn(512)) + 3 * (conv(2048, 512, 3) + bn(512))
    + conv(5 * 512, 512, 3) + bn(512) + CLS,
    "nonlocal": FCN2 + NL + CLS,  # nl_head.py
    "nonlocal_dot": FCN2 + NL + CLS,
    "dnl": FCN2 + NL + conv(512, 1, bias=True) + CLS,  # dnl_head.py: NonLocal2d + conv_mask
    # cc_head.py (and the official CCNet RCCAModule): query/key 512 -> 64, value 512 -> 512, gamma
    **{f"ccnet_r{r}": FCN2 + 2 * conv(512, 64, bias=True) + conv(512, 512, bias=True) + 1 + CLS for r in (1, 2, 3)},
    # gc_head.py: ContextBlock(ratio 1/4): conv_mask, 1x1 -> LayerNorm -> ReLU -> 1x1
    "gc": FCN2 + conv(512, 1, bias=True) + conv(512, 128, bias=True) + 2 * 128 + conv(128, 512, bias=True) + CLS,
    # da_head.py: pam/cam in and out convs; PAM's plain 1x1 convs (q, k to 64, v) and gamma; CAM's
    # gamma; conv_seg, pam_cls_seg, cam_cls_seg
    "danet": 2 * (conv(2048, 512, 3) + bn(512) + conv(512, 512, 3) + bn(512))
    + 2 * conv(512, 64, bias=True) + conv(512, 512, bias=True) + 1 + 1 + 3 * CLS,
    "danet_pam": conv(2048, 512, 3) + bn(512) + conv(512, 512, 3) + bn(512)
    + 2 * conv(512, 64, bias=True) + conv(512, 512, bias=True) + 1 + CLS,
    "danet_cam": conv(2048, 512, 3) + bn(512) + conv(512, 512, 3) + bn(512) + 1 + CLS,
    # resnet101_base_oc.py: 3x3 2048 -> 512 + ABN (bias 512 dropped), BaseOC_Module: self-attention
    # (f_key bias 256 dropped), conv_bn_dropout 1x1 1024 -> 512 + ABN (bias 512 dropped); cls
    "oc_base": conv(2048, 512, 3) + bn(512) + OC_SELF_ATTENTION["base"] + conv(1024, 512) + bn(512) + CLS,
    # resnet101_pyramid_oc.py: layer5 3x3 2048 -> 512 + BN (bias 512 dropped); Pyramid_OC_Module:
    # 4 stages (f_key biases 4 x 256 dropped), up_dr 1x1 512 -> 2048 + ABN (bias 2048 dropped),
    # conv_bn_dropout 1x1 4096 -> 512 + ABN (bias 512 dropped); cls
    "oc_pyramid": conv(2048, 512, 3) + bn(512) + 4 * OC_SELF_ATTENTION["pyramid"] + conv(512, 2048) + bn(2048)
    + conv(4096, 512) + bn(512) + CLS,
    # resnet101_asp_oc.py: 3x3 2048 -> 512 + ABN (bias 512 dropped); ASP_OC_Module(512, 256):
    # context = 3x3 512 -> 256 + ABN (bias 256 dropped), BaseOC_Context_Module(256, key 128,
    # value 256, sizes [2]) = self-attention (f_key bias 128 dropped) + 1x1 256 -> 256 + ABN
    # (bias 256 dropped); conv2 1x1 and conv3-5 3x3 512 -> 256 + ABN; conv_bn_dropout 1280 -> 512
    "oc_asp": conv(2048, 512, 3) + bn(512) + conv(512, 256, 3) + bn(256) + OC_SELF_ATTENTION["asp"]
    + conv(256, 256) + bn(256) + conv(512, 256) + bn(256) + 3 * (conv(512, 256, 3) + bn(256))
    + conv(1280, 512) + bn(512) + CLS,
    # configs/_base_/models/ocrnet_r50-d8.py: decode_head[0] = fcn_head.py FCNHead(1024 -> 256, num_convs=1,
    # concat_input=False) with its own conv_seg; decode_head[1] = ocr_head.py OCRHead: bottleneck 3x3
    # 2048 -> 512, ObjectAttentionBlock (utils/self_attention_block.py, ocr_channels 256: query_project and
    # key_project two ConvModules 512 -> 256 -> 256, value_project and out_project one ConvModule each,
    # 512 -> 256 and 256 -> 512, its bottleneck 1x1 1024 -> 512), conv_seg. No auxiliary head.
    "ocr": conv(1024, 256, 3) + bn(256) + conv(256, 19, bias=True)
    + conv(2048, 512, 3) + bn(512) + 2 * (conv(512, 256) + bn(256) + conv(256, 256) + bn(256))
    + conv(512, 256) + bn(256) + conv(256, 512) + bn(512) + conv(1024, 512) + bn(512) + CLS,
    # isa_head.py ISAHead(isa_channels 256): in_conv 3x3 2048 -> 512; global_relation and local_relation, each
    # a SelfAttentionBlock: query_project and key_project two ConvModules 512 -> 256 -> 256, value_project a
    # plain 1x1 conv 512 -> 512 (its bias 512 dropped: the softmax weights sum to 1, so it adds a constant
    # that output_project's BatchNorm subtracts; openseg's isa_block has no such bias), output_project
    # ConvModule 1x1 512 -> 512; out_conv 1x1 1024 -> 512; conv_seg
    "isa": conv(2048, 512, 3) + bn(512)
    + 2 * (2 * (conv(512, 256) + bn(256) + conv(256, 256) + bn(256)) + conv(512, 512) + conv(512, 512) + bn(512))
    + conv(1024, 512) + bn(512) + CLS,
}
# ema_head.py (EMAHead; configs/_base_/models/emanet_r50-d8.py: ema_channels 512): ema_in_conv 3x3
# 2048 -> 512 + BN; ema_mid_conv 1x1 512 -> 512 with bias, no norm (frozen, still counted); EMAModule's
# bases are a buffer; ema_out_conv 1x1 512 -> 512 + BN; bottleneck 3x3 512 -> channels + BN; conv_cat
# 3x3 (2048 + channels) -> channels + BN; conv_seg. The config's head is 256 wide after the EMA
# module; ours keeps the recipe's one width, 512 (EMA_MMSEG_CONFIG below is the config's own size).


def ema(channels: int) -> int:
    return (conv(2048, 512, 3) + bn(512) + conv(512, 512, bias=True) + conv(512, 512) + bn(512)
            + conv(512, channels, 3) + bn(channels) + conv(2048 + channels, channels, 3) + bn(channels)
            + conv(channels, 19, bias=True))


EMA_MMSEG_CONFIG = ema(256)  # channels 256, ema_channels 512
# ann_head.py (ANNHead; configs/_base_/models/ann_r50-d8.py: in_channels [1024, 2048], project_channels
# 256, query_scales (1,), key_pool_scales (1, 3, 6, 8)). AFNB's SelfAttentionBlock: key_project
# ConvModule 1x1 1024 -> 256 + BN + ReLU, query_project 1x1 2048 -> 256 + BN + ReLU, value_project
# nn.Conv2d 1024 -> 256, out_project nn.Conv2d 256 -> 2048; AFNB.bottleneck 1x1 4096 -> 2048 + BN;
# ANNHead.bottleneck 3x3 2048 -> 512 + BN + ReLU; APNB's block (share_key_query): key/query 1x1
# 512 -> 256 + BN + ReLU, value 512 -> 256, out 256 -> 512; APNB.bottleneck 1x1 1024 -> 512 + BN +
# ReLU; conv_seg.
ANN = (conv(1024, 256) + bn(256) + conv(2048, 256) + bn(256) + conv(1024, 256, bias=True) + conv(256, 2048, bias=True)
       + conv(4096, 2048) + bn(2048) + conv(2048, 512, 3) + bn(512)
       + conv(512, 256) + bn(256) + conv(512, 256, bias=True) + conv(256, 512, bias=True) + conv(1024, 512) + bn(512)
       + CLS)
# The Hamburger authors' ResNet-D8 head (Gsunshine/Enjoy-Hamburger seg_mm/mmseg/models/decode_heads/
# ham_head.py, HamHead; seg_mm/configs/_base_/models/ham_r50-d8.py: in_index 3, channels 512,
# ham_channels 512, GN(32) norms, whose 2 x C affine parameters count as BN's): squeeze 3x3 2048 -> 512
# + GN + ReLU; ham_in 1x1 512 -> 512 with bias, no norm; NMF2D (no parameters; our initial bases
# are a buffer); ham_out 1x1 512 -> 512 + GN; align 3x3 512 -> 512 + GN + ReLU; conv_cat 3x3
# 2560 -> 512 + GN + ReLU; conv_seg.
HAM = (conv(2048, 512, 3) + bn(512) + conv(512, 512, bias=True) + conv(512, 512) + bn(512)
       + conv(512, 512, 3) + bn(512) + conv(2048 + 512, 512, 3) + bn(512) + CLS)
OFFICIAL_PARAMS |= {"ema": ema(512), "ann": ANN, "ham": HAM}
DROPPED_BIASES = {"oc_base": 512 + 256 + 512, "oc_pyramid": 512 + 4 * 256 + 2048 + 512, "oc_asp": 512 + 256 + 128 + 256,
                  "isa": 2 * 512}


def test_every_head_of_the_list_has_an_official_count():
    assert set(OFFICIAL_PARAMS) == set(HEADS)


@pytest.mark.parametrize("name", HEADS)
def test_parameter_count_at_the_recipe_size_equals_the_official_head(name):
    head = HEADS[name].build([3, 256, 512, 1024, 2048], 19, channels=512)
    assert sum(p.numel() for p in head.parameters()) == OFFICIAL_PARAMS[name]


def test_ema_at_the_mmseg_configs_own_width_is_its_layer_list():
    head = HEADS["ema"].build([3, 256, 512, 1024, 2048], 19, channels=256, ema_channels=512)
    assert sum(p.numel() for p in head.parameters()) == EMA_MMSEG_CONFIG
    frozen = [pname for pname, p in head.named_parameters() if not p.requires_grad]
    assert frozen == ["attention.project.weight", "attention.project.bias"]  # mmseg's ema_mid_conv
    assert head.attention.bases.shape == (1, 512, 64) and "attention.bases" in head.state_dict()


def test_asp_oc_is_the_current_release_not_the_2018_one():
    # 15.19 M with the biases the official code keeps; the 2018 release (every branch on the raw
    # 2048 channels at width 512) had about 41.0 M.
    assert OFFICIAL_PARAMS["oc_asp"] + DROPPED_BIASES["oc_asp"] == 15_188_371


# --- initialisation as the reference (mmcv's NonLocal2d and ContextBlock; zero-initialised residuals)


def test_initialisation_follows_the_reference():
    torch.manual_seed(0)
    nl = HEADS["nonlocal"].build([2048], 19, channels=512).attention
    for conv in (nl.g, nl.theta, nl.phi):  # mmcv: normal_init(std=0.01), bias 0
        assert abs(conv.weight.std().item() - 0.01) < 5e-4 and not conv.bias.any()
    assert not nl.W[1].weight.any() and not nl.W[1].bias.any()  # zero-initialised norm: identity at start
    dnl = HEADS["dnl"].build([2048], 19, channels=512).attention
    assert abs(dnl.g.weight.std().item() - 0.01) < 5e-4
    gc = HEADS["gc"].build([2048], 19, channels=512).attention
    # mmcv ContextBlock: kaiming_init(conv_mask, mode="fan_in") = N(0, 2 / fan_in), bias 0
    assert abs(gc.conv_mask.weight.std().item() - (2 / 512) ** 0.5) < 0.01 and not gc.conv_mask.bias.any()
    assert not gc.channel_add_conv[-1].weight.any() and not gc.channel_add_conv[-1].bias.any()
    cc = HEADS["ccnet_r2"].build([2048], 19, channels=512).attention
    da = HEADS["danet"].build([2048], 19, channels=512)
    assert cc.gamma.item() == da.pam.alpha.item() == da.cam.beta.item() == 0.0
    oc = HEADS["oc_base"].build([2048], 19, channels=512).attention
    assert not oc.W.weight.any() and not oc.W.bias.any()
    # EMANet: the bases from N(0, 2/K), L2-normalised over the channels; the frozen W_in as mmcv's
    # ConvModule (Kaiming normal, fan_out, ReLU gain; zero bias), the fixed projection it stays.
    ema = HEADS["ema"].build([2048], 19, channels=512).attention
    torch.testing.assert_close(ema.bases.norm(dim=1), torch.ones(1, 64))
    assert abs(ema.project.weight.std().item() - (2 / 512) ** 0.5) < 2e-3 and not ema.project.bias.any()
    # ANN: mmseg's constant_init(out_project, 0) in both blocks: a fresh head has no attention context.
    ann = HEADS["ann"].build([1024, 2048], 19, channels=512)
    for block in (ann.fusion.attention, ann.pyramid.attention):
        assert not block.out.weight.any() and not block.out.bias.any()
    assert ann.pyramid.attention.query is ann.pyramid.attention.key  # APNB shares query and key
    # Hamburger: NMF's initial bases uniform in [0, 1), L2-normalised over the channels.
    bases = HEADS["ham"].build([2048], 19, channels=512).hamburger.ham.bases
    assert bases.shape == (1, 512, 64) and (bases >= 0).all()
    torch.testing.assert_close(bases.norm(dim=1), torch.ones(1, 64))
    # Neither mmseg's OCR and ISA blocks nor openseg's zero-initialise anything: every conv starts random.
    for name in ("ocr", "isa"):
        head = HEADS[name].build([1024, 2048], 19, channels=512)
        convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) > 10 and all(m.weight.std() > 1e-3 for m in convs), name
