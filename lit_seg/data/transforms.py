"""Training and evaluation transforms (torchvision transforms v2), mmsegmentation's recipe.

Inputs are ``(tv_tensors.Image, tv_tensors.Mask)``: v2 resizes masks with nearest
interpolation, pads them with their own fill and leaves them alone in colour and normalisation
ops, so one pipeline keeps image and mask aligned. Images are float in [0, 1]. Wrap both: v2
passes a plain-tensor second argument through untouched, which would misalign the mask
(``SegmentationDataset`` does the wrapping).

Training (mmseg's Cityscapes/ADE20K pipeline + its data preprocessor)::

    rescale by a random ratio of the base size  ->  random crop, retried while one class covers
    more than cat_max_ratio of it  ->  horizontal flip  ->  photometric distortion  ->
    normalise  ->  pad to the crop size (image 0 after normalisation, i.e. the mean colour; mask 255)
"""

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomCropMaxRatio(v2.Transform):
    """mmseg's ``RandomCrop(crop_size, cat_max_ratio)``: a random crop of at most ``crop_size``
    that no single class dominates.

    The crop is ``min(crop_size, input size)`` (pad afterwards to reach ``crop_size``). While one
    class covers ``cat_max_ratio`` or more of the crop's non-ignored mask pixels, or fewer than
    two classes are present, a new position is drawn, up to ``max_tries`` times; then the last
    draw is kept. ``cat_max_ratio >= 1`` or no mask among the inputs gives a plain random crop.
    Positions come from ``torch``'s generator, so ``torch.manual_seed`` makes them repeatable.
    """

    def __init__(self, crop_size: tuple[int, int], cat_max_ratio: float = 0.75, ignore_index: int = 255,
                 max_tries: int = 10) -> None:
        super().__init__()
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index
        self.max_tries = max_tries

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = F.get_size(_sized(flat_inputs))
        crop_h, crop_w = min(self.crop_size[0], height), min(self.crop_size[1], width)
        mask = next((x for x in flat_inputs if isinstance(x, tv_tensors.Mask)), None)

        top, left = self._position(height, width, crop_h, crop_w)
        if mask is not None and self.cat_max_ratio < 1.0:
            for _ in range(self.max_tries):
                labels, counts = mask[..., top:top + crop_h, left:left + crop_w].unique(return_counts=True)
                counts = counts[labels != self.ignore_index]
                if len(counts) > 1 and counts.max() < self.cat_max_ratio * counts.sum():
                    break
                top, left = self._position(height, width, crop_h, crop_w)
        return dict(top=top, left=left, height=crop_h, width=crop_w)

    @staticmethod
    def _position(height: int, width: int, crop_h: int, crop_w: int) -> tuple[int, int]:
        top = int(torch.randint(0, height - crop_h + 1, ()))
        left = int(torch.randint(0, width - crop_w + 1, ()))
        return top, left

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return F.crop(inpt, **params)


class RandomRescale(v2.Transform):
    """Resize by a ratio drawn uniformly from ``scale_range``, of the input's own size.

    ``v2.ScaleJitter`` does the same relative to a fixed target size; this is for data sets
    without one (images of any size, e.g. a folder data set).
    """

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0)) -> None:
        super().__init__()
        self.scale_range = scale_range

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = F.get_size(_sized(flat_inputs))
        low, high = self.scale_range
        ratio = low + float(torch.rand(())) * (high - low)
        return dict(size=[max(1, int(height * ratio + 0.5)), max(1, int(width * ratio + 0.5))])

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        # Bilinear (antialiased) for images; v2 always resizes masks with nearest.
        return F.resize(inpt, size=params["size"], interpolation=v2.InterpolationMode.BILINEAR, antialias=True)


class PadTo(v2.Transform):
    """Pad at the bottom and right up to ``size`` (H, W), as mmseg's data preprocessor does.

    ``v2.RandomCrop(pad_if_needed=True)`` pads both sides and then crops at random, which can cut
    off part of an image smaller than the crop; this keeps all of it.
    """

    def __init__(self, size: tuple[int, int], image_fill: float = 0.0, mask_fill: int = 255) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.image_fill = image_fill
        self.mask_fill = mask_fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = F.get_size(_sized(flat_inputs))
        return dict(padding=[0, 0, max(0, self.size[1] - width), max(0, self.size[0] - height)])

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not any(params["padding"]):
            return inpt
        fill = self.mask_fill if isinstance(inpt, tv_tensors.Mask) else self.image_fill
        return F.pad(inpt, padding=params["padding"], fill=fill)


class PhotometricDistortion(v2.RandomPhotometricDistort):
    """mmseg's ``PhotoMetricDistortion``: brightness, contrast (before or after the colour ops),
    saturation and hue, each applied with probability 0.5.

    torchvision's ``RandomPhotometricDistort`` is the same SSD-style transform plus a random
    channel permutation, which mmseg does not do: that draw is switched off. Ranges: mmseg adds a
    brightness delta of up to ±32/255, here a factor 0.75–1.25 (the same at mid grey; v2 has no
    additive brightness); contrast and saturation 0.5–1.5 as in mmseg; hue ±18 of OpenCV's 180
    steps = ±0.1 of the hue circle.
    """

    def __init__(self) -> None:
        super().__init__(brightness=(0.75, 1.25), contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=(-0.1, 0.1), p=0.5)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        params = super().make_params(flat_inputs)
        params["channel_permutation"] = None
        return params


def _sized(flat_inputs: list[Any]) -> Any:
    """The input whose size the geometry follows: the first image or mask, else the first tensor."""
    for inpt in flat_inputs:
        if isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            return inpt
    return next(inpt for inpt in flat_inputs if isinstance(inpt, torch.Tensor))


def train_transform(
    crop_size: tuple[int, int],
    scale_range: tuple[float, float] = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
    ignore_index: int = 255,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    base_size: tuple[int, int] | None = None,
) -> v2.Compose:
    """The training pipeline for ``(Image, Mask)``; outputs (3, *crop_size) and (*crop_size).

    Args:
        crop_size: (H, W) of the output.
        scale_range: (min, max) rescale ratio, drawn uniformly (mmseg's ``ratio_range``).
        cat_max_ratio: the crop is redrawn (up to 10 times) while one class covers at least this
            share of its non-ignored pixels; 1 disables it.
        ignore_index: mask value for padding, skipped when counting classes.
        mean, std: normalisation of the [0, 1] image.
        base_size: (H, W) the ratio refers to, keeping the aspect ratio (mmseg's ``scale``,
            e.g. (1024, 2048) for Cityscapes, (512, 2048) for ADE20K and VOC: the image is
            fitted into ``ratio * base_size``); None: a ratio of each image's own size.
    """
    if base_size is None:
        rescale: v2.Transform = RandomRescale(scale_range)
    else:
        # ScaleJitter's target_size is (W, H): it fits the image into ratio * (W, H).
        rescale = v2.ScaleJitter((base_size[1], base_size[0]), scale_range, interpolation=v2.InterpolationMode.BILINEAR)
    return v2.Compose([
        rescale,
        RandomCropMaxRatio(crop_size, cat_max_ratio, ignore_index),
        v2.RandomHorizontalFlip(0.5),
        PhotometricDistortion(),
        v2.Normalize(mean, std),
        PadTo(crop_size, image_fill=0.0, mask_fill=ignore_index),
    ])


def eval_transform(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> v2.Compose:
    """Evaluation: normalise the image only; the whole image at its own size, the mask untouched."""
    return v2.Compose([v2.Normalize(mean, std)])
