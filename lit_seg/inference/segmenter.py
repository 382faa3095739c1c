"""A trained model as a function of an image: ``lit_seg.load(run)(image)``."""

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from lit_seg.data.datasets.base import read_image
from lit_seg.data.datasets.cityscapes import CLASS_NAMES, PALETTE
from lit_seg.inference.predict import palette_bytes
from lit_seg.train.checkpoints import load_module


class Segmenter:
    """A trained :class:`~lit_seg.train.module.SegmentationModule` that segments images, e.g.::

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
        if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
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
        images, single = self._batch(image)
        with torch.no_grad():
            scores, _ = self.module.segment(images)
        return scores[0].cpu() if single else scores.cpu()

    def __call__(self, image) -> Tensor:
        """Class indices (H, W) int64, or (B, H, W) for a batch tensor."""
        return self.scores(image).argmax(dim=-3)

    def colorize(self, mask: Tensor):
        """(H, W) class indices -> a palette PIL image in the data set's colours."""
        picture = Image.fromarray(mask.to("cpu").numpy().astype("uint8"), "P")
        picture.putpalette(palette_bytes(self.palette, len(self.class_names)))
        return picture


def load(path, device: str = "cpu", **eval_settings) -> Segmenter:
    """A run folder (its best checkpoint and the evaluation recipe of its ``config.yaml``) or a
    ``.ckpt`` file -> :class:`Segmenter`. ``eval_settings`` override the recipe, e.g.
    ``eval_scales=(0.75, 1.0, 1.25), eval_flip=True`` or ``eval_mode="slide", eval_crop=(512, 512)``."""
    module = load_module(path, device, **eval_settings)
    palette = PALETTE if list(module.class_names) == list(CLASS_NAMES) else None
    return Segmenter(module, palette=palette)
