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


# --- A trained model as a function of an image -----------------------------------------------

class Segmenter:
    """A trained :class:`~lit_seg.module.SegmentationModule` that segments images, e.g.::

        segmenter = lit_seg.load("runs/ccnet_r2/<run>")   # a run folder or a .ckpt
        mask = segmenter("photo.jpg")                      # (H, W) int64 class indices

    Accepts a path, a PIL image, an (H, W, 3) uint8 array, a float (3, H, W) or (B, 3, H, W)
    tensor in [0, 1]; any size. Normalises with ``mean``/``std`` (ImageNet's, as training does)
    and runs the module's evaluation recipe (``eval_mode``, ``eval_scales``, ``eval_flip``) in
    eval mode without gradients. The result is on the CPU, (H, W), or (B, H, W) for a batch.
    """

    def __init__(self, module, palette: Sequence[Sequence[int]] | None = None,
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225)) -> None:
        self.module = module.eval()
        self.palette = [tuple(c) for c in palette] if palette is not None else None
        self.mean, self.std = tuple(mean), tuple(std)

    @property
    def class_names(self) -> list[str]:
        return list(self.module.class_names)

    @property
    def device(self):
        return next(self.module.parameters()).device

    def _batch(self, image) -> tuple[Tensor, bool]:
        import numpy as np
        import torch
        from PIL import Image

        if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
            from lit_seg.data.datasets.base import read_image

            image = read_image(image)
        elif isinstance(image, Image.Image):
            image = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).float() / 255
        elif isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"Segmenter: expected an (H, W, 3) RGB array, got {image.shape}")
            image = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / (255 if image.dtype == np.uint8 else 1)
        if not isinstance(image, Tensor) or image.ndim not in (3, 4) or image.shape[-3] != 3:
            raise ValueError(f"Segmenter: expected a path, PIL image, (H, W, 3) array or (3, H, W) / (B, 3, H, W) "
                             f"tensor, got {getattr(image, 'shape', type(image).__name__)}")
        single = image.ndim == 3
        images = image[None] if single else image
        mean = torch.tensor(self.mean, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype).view(1, 3, 1, 1)
        return ((images.float().cpu() - mean) / std).to(self.device), single

    def scores(self, image) -> Tensor:
        """Class scores (C, H, W) or (B, C, H, W): logits, or probabilities for multi-scale/flip."""
        import torch

        images, single = self._batch(image)
        with torch.no_grad():
            scores, _ = self.module.segment(images)
        return scores[0].cpu() if single else scores.cpu()

    def __call__(self, image) -> Tensor:
        """Class indices (H, W) int64, or (B, H, W) for a batch tensor."""
        return self.scores(image).argmax(dim=-3)

    def colorize(self, mask: Tensor):
        """(H, W) class indices -> a palette PIL image in the data set's colours."""
        from PIL import Image

        from lit_seg.predict import _palette_bytes

        picture = Image.fromarray(mask.to("cpu").numpy().astype("uint8"), "P")
        picture.putpalette(_palette_bytes(self.palette, len(self.class_names)))
        return picture


def load(path, device: str = "cpu", **eval_settings) -> Segmenter:
    """A run folder (its best checkpoint and the evaluation recipe of its ``config.yaml``) or a
    ``.ckpt`` file -> :class:`Segmenter`. ``eval_settings`` override the recipe, e.g.
    ``eval_scales=(0.75, 1.0, 1.25), eval_flip=True`` or ``eval_mode="slide", eval_crop=(512, 512)``."""
    from pathlib import Path

    import yaml

    from lit_seg.checkpoints import read_checkpoint, run_checkpoint
    from lit_seg.errors import ConfigError
    from lit_seg.module import EVAL_ARGS, SegmentationModule

    folder = Path(path)
    ckpt = run_checkpoint(folder)
    read_checkpoint(ckpt)  # a one-line ConfigError for a missing or foreign file
    recipe = {}
    if folder.is_dir() and (folder / "config.yaml").is_file():
        model = (yaml.safe_load((folder / "config.yaml").read_text()) or {}).get("model") or {}
        recipe = {k: model[k] for k in EVAL_ARGS if model.get(k) is not None}
    unknown = set(eval_settings) - set(EVAL_ARGS)
    if unknown:
        raise ConfigError(f"lit_seg.load: unknown settings {sorted(unknown)}; valid: {', '.join(EVAL_ARGS)}")
    recipe.update(eval_settings)
    module = SegmentationModule.load_from_checkpoint(ckpt, map_location=device, **recipe)
    palette = None
    from lit_seg.data.datasets.cityscapes import CLASS_NAMES, PALETTE

    if list(module.class_names) == list(CLASS_NAMES):
        palette = PALETTE
    return Segmenter(module.to(device), palette=palette)
