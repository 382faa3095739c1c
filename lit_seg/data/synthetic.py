"""A procedurally generated data set in which the right label depends on a distant cue.

Every image holds one coloured *cue* and a few grey, striped *objects*. The objects all look
alike; their class is the cue's colour ("object_red" when the cue is red). Objects keep at least
``margin`` pixels away from the cue, so a local receptive field sees a grey striped shape and
nothing that tells its class: a head must gather context from far away to label it. Cue pixels
are labelled ``ignore_index`` (the cue is not a target).

Two cues:
- ``stripe`` (default): a full-width or full-height bar. It crosses every column (or row), so a
  single criss-cross step can reach it from any object.
- ``beacon``: a small square kept out of every object's rows and columns, so criss-cross
  attention needs two steps (R=2) to reach it. Much harder to learn: at the demo's budget no
  head we tried learns it; it is there for longer studies of recurrence.

Deterministic: sample ``i`` of a data set with seed ``s`` is always the same image.
"""

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from lit_seg.errors import ConfigError

PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.80, 0.15),
    "blue": (0.15, 0.25, 0.95),
    "yellow": (0.95, 0.90, 0.10),
    "magenta": (0.90, 0.15, 0.90),
    "cyan": (0.10, 0.90, 0.90),
}


class ContextCueDataset(Dataset):
    """``length`` synthetic (image, mask) pairs.

    image: float32 (3, H, W) in [0, 1]; mask: int64 (H, W) with 0 background, ``1 + k`` for
    objects of colour ``k``, ``ignore_index`` on the cue.

    Args:
        length: number of samples.
        image_size: (H, W).
        num_colors: number of cue colours, i.e. object classes (1 to 6).
        num_objects: (min, max) objects per image.
        object_radius: (min, max) half-size of an object in pixels.
        cue_size: thickness of the stripe, or side of the beacon square, in pixels. 16 = two
            feature cells at output stride 8: an 8 px cue straddles cells and its colour reaches
            the head diluted by the background (CCNet then learnt it on some seeds only).
        margin: free pixels between the cue and any object.
        seed: the data set's seed; different seeds give disjoint-looking sets.
        cue: ``stripe`` or ``beacon`` (see the module docstring).
    """

    def __init__(
        self,
        length: int,
        image_size: tuple[int, int] = (96, 96),
        num_colors: int = 3,
        num_objects: tuple[int, int] = (2, 4),
        object_radius: tuple[int, int] = (6, 12),
        cue_size: int = 16,
        margin: int = 16,
        seed: int = 0,
        ignore_index: int = 255,
        cue: Literal["stripe", "beacon"] = "stripe",
    ) -> None:
        if not 1 <= num_colors <= len(PALETTE):
            raise ConfigError(f"num_colors must be in 1..{len(PALETTE)}, got {num_colors}")
        if not 1 <= cue_size <= min(image_size):
            raise ConfigError(f"cue_size must be in 1..{min(image_size)} px for image_size {tuple(image_size)}, "
                              f"got {cue_size}")
        if min(image_size) <= 2 * object_radius[1]:
            raise ConfigError(f"image_size {tuple(image_size)} is too small for objects of radius up to "
                              f"{object_radius[1]} px: use at least {2 * object_radius[1] + 1} px a side")
        self.length = length
        self.height, self.width = image_size
        self.colors = list(PALETTE)[:num_colors]
        self.num_objects = num_objects
        self.object_radius = object_radius
        self.cue_size = cue_size
        self.margin = margin
        self.cue = cue
        self.seed = seed
        self.ignore_index = ignore_index
        self._offsets = np.arange(2 * object_radius[1] + 1)

    @property
    def class_names(self) -> list[str]:
        return ["background"] + [f"object_{c}" for c in self.colors]

    @property
    def num_classes(self) -> int:
        return 1 + len(self.colors)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index])
        image, mask = self._render(rng)
        return torch.from_numpy(image), torch.from_numpy(mask)

    def _render(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        h, w, b = self.height, self.width, self.cue_size
        # Background: a random grey level with a faint random tint and pixel noise.
        level = rng.uniform(0.25, 0.6)
        tint = rng.uniform(-0.05, 0.05, size=(3, 1, 1)).astype(np.float32)
        image = rng.standard_normal((3, h, w), dtype=np.float32) * 0.06 + (level + tint)
        mask = np.zeros((h, w), dtype=np.int64)

        color = int(rng.integers(len(self.colors)))
        by, bx = int(rng.integers(0, h - b + 1)), int(rng.integers(0, w - b + 1))
        if self.cue == "stripe":
            # A full-width or full-height bar: every column (or row) crosses it.
            horizontal = rng.random() < 0.5
            cue_rows = slice(by, by + b) if horizontal else slice(0, h)
            cue_cols = slice(0, w) if horizontal else slice(bx, bx + b)
        else:
            cue_rows, cue_cols = slice(by, by + b), slice(bx, bx + b)
        row_band = (cue_rows.start - self.margin, cue_rows.stop + self.margin)
        col_band = (cue_cols.start - self.margin, cue_cols.stop + self.margin)
        # Objects keep `margin` pixels from the cue; a beacon also keeps out of their rows and
        # columns, a stripe (which spans one axis) only out of the other.
        blocked = (lambda r, c: _overlaps(r, row_band) and _overlaps(c, col_band)) if self.cue == "stripe" else \
                  (lambda r, c: _overlaps(r, row_band) or _overlaps(c, col_band))

        placed = 0
        wanted = int(rng.integers(self.num_objects[0], self.num_objects[1] + 1))
        for _ in range(50 * wanted):
            if placed == wanted:
                break
            r = int(rng.integers(self.object_radius[0], self.object_radius[1] + 1))
            cy, cx = int(rng.integers(r, h - r)), int(rng.integers(r, w - r))
            rows, cols = slice(cy - r, cy + r + 1), slice(cx - r, cx + r + 1)
            if blocked((rows.start, rows.stop), (cols.start, cols.stop)):
                continue
            dy, dx = self._offsets[: 2 * r + 1, None] - r, self._offsets[None, : 2 * r + 1] - r
            shape = dy * dy + dx * dx <= r * r if rng.random() < 0.5 else np.ones((2 * r + 1,) * 2, dtype=bool)
            period, angle = rng.uniform(3.0, 6.0), rng.uniform(0, np.pi)
            phase = (dy * np.sin(angle) + dx * np.cos(angle)) * (2 * np.pi / period)
            stripes = rng.uniform(0.55, 0.75) + 0.2 * np.sign(np.sin(phase + rng.uniform(0, 2 * np.pi)))
            patch = image[:, rows, cols]
            patch[:, shape] = stripes[shape] + rng.normal(0.0, 0.03, size=(3, int(shape.sum())))
            mask[rows, cols][shape] = 1 + color
            placed += 1

        image[:, cue_rows, cue_cols] = np.asarray(PALETTE[self.colors[color]], dtype=np.float32)[:, None, None]
        mask[cue_rows, cue_cols] = self.ignore_index
        return np.clip(image, 0.0, 1.0, out=image), mask


def _overlaps(a: Sequence[int], b: Sequence[int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]
