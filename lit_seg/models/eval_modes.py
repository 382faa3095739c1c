"""Test-time inference modes of mmsegmentation, in plain torch: whole, slide, multi-scale + flip.

Every function takes ``model_fn``: a callable mapping normalised images (B, 3, h, w) to logits
(B, num_classes, h, w) at the same size (e.g. :meth:`SegmentationModule.forward`, which upsamples
the head's output). Call them under ``torch.no_grad()`` and with the model in eval mode.
"""

from collections.abc import Callable, Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

ModelFn = Callable[[Tensor], Tensor]


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    h, w = value
    return int(h), int(w)


def whole_inference(model_fn: ModelFn, images: Tensor) -> Tensor:
    """The whole image in one forward pass: (B, 3, H, W) -> logits (B, C, H, W)."""
    return model_fn(images)


def slide_inference(model_fn: ModelFn, images: Tensor, num_classes: int, crop_size: int | Sequence[int],
                    stride: int | Sequence[int], pad: bool = False) -> Tensor:
    """mmsegmentation's ``slide`` mode: overlapping ``crop_size`` windows every ``stride`` pixels;
    each pixel's logits are summed over the windows covering it and divided by their count.

    Windows are placed as mmseg does: ``max(H - crop_h + stride_h - 1, 0) // stride_h + 1`` rows
    of windows, the last one shifted back to end at the border, so every window lies inside the
    image. An image smaller than the window along a side gets one window clipped to the image
    along it (mmseg's behaviour): an image smaller than the window in both sides is then run
    whole, exactly as :func:`whole_inference`. With ``pad=True`` such windows are instead
    zero-padded at the bottom/right to the full window (zero is the mean after normalisation),
    as some original code bases do, and the logits cropped back.

    Returns logits (B, num_classes, H, W) (averaged, not softmaxed).
    """
    crop_h, crop_w = _pair(crop_size)
    stride_h, stride_w = _pair(stride)
    if min(crop_h, crop_w, stride_h, stride_w) < 1:
        raise ValueError(f"slide_inference: crop_size {crop_size} and stride {stride} must be positive")
    if stride_h > crop_h or stride_w > crop_w:
        raise ValueError(f"slide_inference: stride {stride} larger than crop_size {crop_size} leaves pixels unseen")
    batch, _, height, width = images.shape
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    logits = images.new_zeros((batch, num_classes, height, width))
    count = images.new_zeros((1, 1, height, width))
    for row in range(rows):
        for col in range(cols):
            y2 = min(row * stride_h + crop_h, height)
            x2 = min(col * stride_w + crop_w, width)
            y1, x1 = max(y2 - crop_h, 0), max(x2 - crop_w, 0)
            crop = images[:, :, y1:y2, x1:x2]
            h, w = crop.shape[-2:]
            if pad and (h < crop_h or w < crop_w):
                crop_logits = model_fn(F.pad(crop, (0, crop_w - w, 0, crop_h - h)))[:, :, :h, :w]
            else:
                crop_logits = model_fn(crop)
            logits[:, :, y1:y2, x1:x2] += crop_logits
            count[:, :, y1:y2, x1:x2] += 1
    return logits / count


def multiscale_flip_inference(
    model_fn: ModelFn,
    images: Tensor,
    scales: Sequence[float] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75),
    flip: bool = True,
    mode: Literal["whole", "slide"] = "whole",
    num_classes: int | None = None,
    crop_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
) -> Tensor:
    """mmsegmentation's aug test: the mean of the **softmax probabilities** (not the logits) over
    every scale and, with ``flip``, its horizontal flip.

    Each pass resizes the images by ``scale`` (bilinear, ``align_corners=False``, sizes rounded),
    runs :func:`whole_inference` or :func:`slide_inference` (``num_classes``, ``crop_size`` and
    ``stride`` are for slide), resizes the logits back to the input size, flips them back and
    takes the softmax, as mmseg's ``inference`` does before ``aug_test`` averages. Scales are
    relative to the input images (mmseg's are relative to the test pipeline's ``img_scale``,
    the same for Cityscapes evaluated at its native 1024x2048).

    Returns probabilities (B, C, H, W), summing to 1 over C.
    """
    if not scales:
        raise ValueError("multiscale_flip_inference: give at least one scale")
    if mode == "slide" and (num_classes is None or crop_size is None or stride is None):
        raise ValueError("multiscale_flip_inference: slide mode needs num_classes, crop_size and stride")
    if mode not in ("whole", "slide"):
        raise ValueError(f"multiscale_flip_inference: mode must be 'whole' or 'slide', got {mode!r}")
    height, width = images.shape[-2:]

    def run(x: Tensor) -> Tensor:
        if mode == "slide":
            return slide_inference(model_fn, x, num_classes, crop_size, stride)
        return whole_inference(model_fn, x)

    probs = None
    passes = 0
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = images if size == (height, width) else F.interpolate(images, size=size, mode="bilinear",
                                                                       align_corners=False)
        for flipped in (False, True) if flip else (False,):
            x = scaled.flip(-1) if flipped else scaled
            logits = run(x)
            if logits.shape[-2:] != (height, width):
                logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            if flipped:
                logits = logits.flip(-1)
            p = logits.softmax(dim=1)
            probs = p if probs is None else probs + p
            passes += 1
    return probs / passes


def segment(model_fn: ModelFn, images: Tensor, num_classes: int, mode: Literal["whole", "slide"] = "whole",
            crop_size: int | Sequence[int] | None = None, stride: int | Sequence[int] | None = None,
            scales: Sequence[float] = (1.0,), flip: bool = False) -> tuple[Tensor, bool]:
    """One entry point: returns ``(scores, are_probs)``.

    Single scale 1.0 without flip gives the logits of ``mode`` (``are_probs`` False); anything
    else gives :func:`multiscale_flip_inference`'s averaged probabilities (``are_probs`` True).
    """
    if tuple(scales) == (1.0,) and not flip:
        if mode == "slide":
            if crop_size is None or stride is None:
                raise ValueError("segment: slide mode needs crop_size and stride")
            return slide_inference(model_fn, images, num_classes, crop_size, stride), False
        return whole_inference(model_fn, images), False
    return multiscale_flip_inference(model_fn, images, scales, flip, mode, num_classes, crop_size, stride), True
