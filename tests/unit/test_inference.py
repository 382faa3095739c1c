"""Whole, sliding-window and multi-scale + flip inference (lit_seg.inference) and their use in evaluation."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_seg.inference import multiscale_flip_inference, segment, slide_inference, whole_inference
from lit_seg.models.heads import FCNHead
from lit_seg.train.module import SegmentationModule

NUM_CLASSES = 4


def local_model() -> nn.Module:
    """A 1x1 conv: each output pixel depends on its own input pixel only (and flip-equivariant)."""
    return nn.Conv2d(3, NUM_CLASSES, 1).eval()


class GlobalModel(nn.Module):
    """Output depends on the whole input (its mean), so any padding or cropping would show."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, NUM_CLASSES, 3, padding=1)

    def forward(self, x):
        return self.conv(x) + 5 * self.conv(x).mean(dim=(2, 3), keepdim=True)


@torch.no_grad()
def test_slide_equals_whole_exactly_on_an_image_smaller_than_the_window():
    model = GlobalModel().eval()
    images = torch.randn(2, 3, 11, 17)
    whole = whole_inference(model, images)
    slide = slide_inference(model, images, NUM_CLASSES, crop_size=(16, 32), stride=(8, 16))
    assert torch.equal(slide, whole)


@torch.no_grad()
def test_slide_with_padding_pads_small_windows_to_the_full_crop():
    model = GlobalModel().eval()
    images = torch.randn(1, 3, 11, 17)
    padded = slide_inference(model, images, NUM_CLASSES, crop_size=(16, 32), stride=(8, 16), pad=True)
    expected = model(F.pad(images, (0, 32 - 17, 0, 16 - 11)))[:, :, :11, :17]
    torch.testing.assert_close(padded, expected)


@pytest.mark.parametrize("size, crop, stride", [((29, 45), (8, 12), (5, 7)), ((24, 36), (8, 12), (8, 12)),
                                                ((10, 40), (16, 16), (11, 16))])
@torch.no_grad()
def test_slide_equals_whole_for_a_local_model(size, crop, stride):
    model = local_model()
    images = torch.randn(2, 3, *size)
    slide = slide_inference(model, images, NUM_CLASSES, crop, stride)
    torch.testing.assert_close(slide, whole_inference(model, images), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_slide_averages_overlapping_windows():
    """A model that outputs its call number reveals the windows and the averaging."""
    calls = []

    def model_fn(x):
        calls.append(tuple(x.shape[-2:]))
        return torch.full((x.shape[0], 1, *x.shape[-2:]), float(len(calls)))

    out = slide_inference(model_fn, torch.zeros(1, 3, 4, 10), 1, crop_size=(4, 6), stride=(4, 4))
    # mmseg's grid: (10 - 6 + 4 - 1) // 4 + 1 = 2 windows, x in [0, 6) and [4, 8) shifted back to
    # [4, 10) to end at the border: columns 4 and 5 are averaged.
    assert calls == [(4, 6), (4, 6)]
    assert out[0, 0, 0].tolist() == [1, 1, 1, 1, 1.5, 1.5, 2, 2, 2, 2]


@torch.no_grad()
def test_single_scale_without_flip_equals_whole():
    model = GlobalModel().eval()
    images = torch.randn(2, 3, 16, 24)
    probs = multiscale_flip_inference(model, images, scales=(1.0,), flip=False)
    torch.testing.assert_close(probs, model(images).softmax(dim=1))
    scores, are_probs = segment(model, images, NUM_CLASSES)
    assert not are_probs and torch.equal(scores, model(images))


@torch.no_grad()
def test_flip_with_a_flip_equivariant_model_equals_no_flip():
    model = local_model()
    images = torch.randn(2, 3, 16, 24)
    for mode in ("whole", "slide"):
        kwargs = dict(mode=mode, num_classes=NUM_CLASSES, crop_size=(8, 8), stride=(6, 6))
        flipped = multiscale_flip_inference(model, images, scales=(1.0, 0.5), flip=True, **kwargs)
        plain = multiscale_flip_inference(model, images, scales=(1.0, 0.5), flip=False, **kwargs)
        torch.testing.assert_close(flipped, plain, rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_multiscale_averages_softmax_probabilities_resized_to_the_input():
    model = GlobalModel().eval()
    images = torch.randn(1, 3, 16, 24)
    probs = multiscale_flip_inference(model, images, scales=(0.5, 1.5), flip=False)
    expected = sum(F.interpolate(model(F.interpolate(images, scale_factor=s, mode="bilinear")), size=(16, 24),
                                 mode="bilinear").softmax(1) for s in (0.5, 1.5)) / 2
    assert probs.shape == (1, NUM_CLASSES, 16, 24)
    torch.testing.assert_close(probs, expected)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 16, 24))


def small_module(**kwargs) -> SegmentationModule:
    return SegmentationModule(head=lambda ch, n: FCNHead(ch, n, channels=8), num_classes=NUM_CLASSES,
                              encoder_name="resnet18", encoder_depth=3, aux_weight=0.0, **kwargs).eval()


@torch.no_grad()
def test_module_slide_eval_on_a_small_image_equals_whole_and_defaults_are_whole():
    images = torch.randn(1, 3, 32, 48)
    whole = small_module()
    slide = small_module(eval_mode="slide", eval_crop=(64, 64))
    slide.load_state_dict(whole.state_dict())
    assert whole.segment(images)[1] is False and torch.equal(whole.segment(images)[0], whole(images))
    assert torch.equal(slide.segment(images)[0], whole(images))
    assert slide.eval_stride == (42, 42)
    ms = small_module(eval_scales=(0.5, 1.0), eval_flip=True)
    scores, are_probs = ms.segment(images)
    assert are_probs and scores.shape == (1, NUM_CLASSES, 32, 48)


def test_module_rejects_slide_without_a_window():
    with pytest.raises(ValueError, match="eval_crop"):
        small_module(eval_mode="slide")


def test_eval_settings_stay_out_of_the_checkpoint_hyperparameters():
    """`test --ckpt_path` merges saved hyperparameters over the command line: eval_* must not be saved."""
    module = small_module(eval_mode="slide", eval_crop=(64, 64), eval_flip=True)
    assert not {"eval_mode", "eval_crop", "eval_stride", "eval_scales", "eval_flip"} & set(module.hparams)
