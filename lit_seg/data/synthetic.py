"""Built-in tasks: procedurally generated images in which an object's label depends on a distant cue.

Every image holds a few striped *objects* and one or more coloured *cues*. Objects look alike
except for what a task says; their class is read off a cue ("object_red" when the cue is red).
Cue pixels are labelled ``ignore_index``: the cue is not a target. Each task is built so that a
theory of the heads predicts which can solve it (docs/data.md, "Built-in tasks"):

- ``reach`` (the default): a full-height stripe at one end of a wide image, every object at least
  ``margin`` px (88) from it horizontally: beyond the receptive field of the FCN baseline (ResNet-18
  to layer2 + FCN head: an output pixel sees at most 83 px to its left and 77 px to its right,
  measured exactly as the support of its input gradient, ``lit_seg.study.receptive_field``). FCN
  cannot see the cue at all; any head with image-wide context can, CCNet with R=1 too (the stripe
  crosses every row).
- ``recurrence``: a 40 px square in one corner, every object at least ``margin`` px from it in
  rows *and* columns, i.e. outside the bands that one criss-cross step plus the encoder and head
  convs around it can see (measured the same way on CCNet R=1). R=1 cannot reach the cue; R=2 can.
- ``binding``: two objects (by default; up to one per key slot) of at least two classes, each with
  a tint of its own (hues 90° or more apart, from a continuum) and a 32 px *key* of the same tint,
  with the class colour at its centre, in a column of keys at the far end. An object's class is
  its own key's colour: pooled context holds every key's colour but not which belongs to whom;
  pixel-pair similarity can match tints.
- ``global``: the first built-in task, kept so that ``results/archive/all_heads.*`` stay reproducible:
  a stripe across a square image, ``margin`` (16) px from the objects, well inside the FCN's
  receptive field; one colour per image, so it tests only that context is gathered.

Deterministic: sample ``i`` of a data set with seed ``s`` is always the same image.
"""

import colorsys
from dataclasses import dataclass
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

Task = Literal["reach", "recurrence", "binding", "global"]
TASKS: tuple[str, ...] = Task.__args__


@dataclass(frozen=True)
class TaskLayout:
    """A task's defaults: image size (H, W), free pixels between any cue and any object, the
    cue's size, objects per image (min, max) and their half-size (min, max) in pixels."""

    image_size: tuple[int, int]
    margin: int
    cue_size: int = 16
    num_objects: tuple[int, int] = (2, 4)
    object_radius: tuple[int, int] = (6, 12)


# recurrence: the cue is as large as the corner left outside the object's bands allows (40 px:
# 25 of 400 cells), and one larger object: with a 16 px cue at 144x144 (4 of 324 cells) the
# non-local oracle stayed at chance (val mIoU 0.36 after 384 steps), with a 32 px one at 160x160
# and up to four small objects it reached 0.61.
TASK_LAYOUTS: dict[str, TaskLayout] = {
    "reach": TaskLayout((64, 160), 88),
    "recurrence": TaskLayout((160, 160), 88, cue_size=40, num_objects=(1, 1), object_radius=(10, 15)),
    "binding": TaskLayout((64, 192), 88, cue_size=32, num_objects=(2, 2)),
    "global": TaskLayout((96, 96), 16),
}
_MIN_HUE_GAP = 1 / 4  # binding: tints of one image at least 90 degrees apart on the hue circle


class ContextCueDataset(Dataset):
    """``length`` synthetic (image, mask) pairs of one task.

    image: float32 (3, H, W) in [0, 1]; mask: int64 (H, W) with 0 background, ``1 + k`` for
    objects of class colour ``k``, ``ignore_index`` on the cues.

    Args:
        length: number of samples.
        task: ``reach``, ``recurrence``, ``binding`` or ``global`` (module docstring).
        image_size: (H, W); None: the task's (reach 64x160, binding 64x192, recurrence
            160x160, global 96x96).
        num_colors: class colours, i.e. object classes (1 to 6; binding needs 2).
        num_objects: (min, max) objects per image (binding: at most one per key slot); None: the
            task's (2 to 4; recurrence 1, binding 2).
        object_radius: (min, max) half-size of an object in pixels; None: the task's (6 to 12;
            recurrence 10 to 15).
        cue_size: thickness of a stripe, or side of a square cue or key, in pixels; None: the
            task's (16; recurrence 40, binding 32). 16 = two feature cells at output stride 8:
            an 8 px cue straddles cells and its colour reaches the head diluted by the
            background (CCNet then learnt it on some seeds only).
        margin: free pixels between any cue and any object (per axis where the task says);
            None: the task's (88; global 16).
        seed: the data set's seed; different seeds give disjoint-looking sets.
    """

    def __init__(
        self,
        length: int,
        image_size: tuple[int, int] | None = None,
        num_colors: int = 3,
        num_objects: tuple[int, int] | None = None,
        object_radius: tuple[int, int] | None = None,
        cue_size: int | None = None,
        margin: int | None = None,
        seed: int = 0,
        ignore_index: int = 255,
        task: Task = "reach",
    ) -> None:
        if task not in TASK_LAYOUTS:
            raise ConfigError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
        layout = TASK_LAYOUTS[task]
        image_size = tuple(image_size) if image_size is not None else layout.image_size
        margin = layout.margin if margin is None else margin
        cue_size = layout.cue_size if cue_size is None else cue_size
        num_objects = layout.num_objects if num_objects is None else tuple(num_objects)
        object_radius = layout.object_radius if object_radius is None else tuple(object_radius)
        if not 1 <= num_colors <= len(PALETTE):
            raise ConfigError(f"num_colors must be in 1..{len(PALETTE)}, got {num_colors}")
        if task == "binding" and num_colors < 2:
            raise ConfigError("the binding task needs num_colors >= 2 (two classes in every image)")
        if not 1 <= cue_size <= min(image_size):
            raise ConfigError(f"cue_size must be in 1..{min(image_size)} px for image_size {image_size}, "
                              f"got {cue_size}")
        diameter = 2 * object_radius[1] + 1
        if min(image_size) < diameter:
            raise ConfigError(f"image_size {image_size} is too small for objects of radius up to "
                              f"{object_radius[1]} px: use at least {diameter} px a side")
        # reach and binding separate along the width, recurrence along both axes.
        needed = cue_size + margin + diameter * (2 if task == "binding" else 1)
        short = [axis for axis, size in zip(("height", "width"), image_size)
                 if size < needed and (axis == "width" or task == "recurrence")] if task != "global" else []
        if short:
            raise ConfigError(f"task {task}: image {' and '.join(short)} must be at least cue_size + margin + "
                              f"{'two object diameters' if task == 'binding' else 'object diameter'} = {needed} px, "
                              f"got image_size {image_size}")
        self.key_slots = image_size[0] // cue_size
        if task == "binding" and self.key_slots < 2:
            raise ConfigError(f"task binding: image height {image_size[0]} holds fewer than 2 keys of "
                              f"{cue_size} px; use at least {2 * cue_size} px")
        self.length = length
        self.task = task
        self.height, self.width = image_size
        self.colors = list(PALETTE)[:num_colors]
        self.num_objects = num_objects
        self.object_radius = object_radius
        self.cue_size = cue_size
        self.margin = margin
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
        image, mask = self._background(rng)
        getattr(self, f"_render_{self.task}")(rng, image, mask)
        np.clip(image, 0.0, 1.0, out=image)
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(mask))

    # --- parts ---------------------------------------------------------------------------------

    def _background(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        # A random grey level with a faint random tint and pixel noise.
        h, w = self.height, self.width
        level = rng.uniform(0.25, 0.6)
        tint = rng.uniform(-0.05, 0.05, size=(3, 1, 1)).astype(np.float32)
        image = rng.standard_normal((3, h, w), dtype=np.float32) * 0.06 + (level + tint)
        return image, np.zeros((h, w), dtype=np.int64)

    def _object(self, rng: np.random.Generator, rows: tuple[int, int], cols: tuple[int, int],
                accept=None) -> tuple[slice, slice, np.ndarray] | None:
        """One object with every pixel in rows [a, b) x cols [c, d): (rows, cols, shape), or None
        when it does not fit or ``accept(box)`` refuses its bounding box."""
        r = int(rng.integers(self.object_radius[0], self.object_radius[1] + 1))
        if rows[1] - rows[0] < 2 * r + 1 or cols[1] - cols[0] < 2 * r + 1:
            return None
        cy, cx = int(rng.integers(rows[0] + r, rows[1] - r)), int(rng.integers(cols[0] + r, cols[1] - r))
        box = (slice(cy - r, cy + r + 1), slice(cx - r, cx + r + 1))
        if accept is not None and not accept(box):
            return None
        dy, dx = self._offsets[: 2 * r + 1, None] - r, self._offsets[None, : 2 * r + 1] - r
        shape = dy * dy + dx * dx <= r * r if rng.random() < 0.5 else np.ones((2 * r + 1,) * 2, dtype=bool)
        return box[0], box[1], shape

    def _stripes(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """A (size, size) pattern of stripes of random period, angle and phase around 0.65."""
        d = self._offsets[:size] - size // 2
        dy, dx = d[:, None], d[None, :]
        period, angle = rng.uniform(3.0, 6.0), rng.uniform(0, np.pi)
        phase = (dy * np.sin(angle) + dx * np.cos(angle)) * (2 * np.pi / period)
        return rng.uniform(0.55, 0.75) + 0.2 * np.sign(np.sin(phase + rng.uniform(0, 2 * np.pi)))

    def _scatter_grey_objects(self, rng, image, mask, rows: tuple[int, int], cols: tuple[int, int], label: int,
                              accept=None) -> None:
        """``num_objects`` grey striped objects (drawn at random) with every pixel in rows x cols,
        labelled ``label``; placements that ``accept`` refuses are drawn again (50 tries each)."""
        wanted, placed = self._count(rng), 0
        for _ in range(50 * wanted):
            if placed == wanted:
                break
            if (obj := self._object(rng, rows, cols, accept=accept)) is None:
                continue
            box_rows, box_cols, shape = obj
            stripes = self._stripes(rng, shape.shape[0])
            patch = image[:, box_rows, box_cols]
            patch[:, shape] = stripes[shape] + rng.normal(0.0, 0.03, size=(3, int(shape.sum())))
            mask[box_rows, box_cols][shape] = label
            placed += 1

    def _count(self, rng: np.random.Generator, most: int | None = None) -> int:
        low, high = self.num_objects
        if most is not None:
            low, high = min(low, most), min(high, most)
        return int(rng.integers(low, high + 1))

    def _cue_colour(self, k: int) -> np.ndarray:
        return np.asarray(PALETTE[self.colors[k]], dtype=np.float32)[:, None, None]

    # --- tasks: each draws on a left/top-anchored layout and mirrors it at random ------------------

    def _render_reach(self, rng, image, mask) -> None:
        h, w, b = self.height, self.width, self.cue_size
        color = int(rng.integers(len(self.colors)))
        x = int(rng.integers(0, w - (b + self.margin + 2 * self.object_radius[1] + 1) + 1))
        self._scatter_grey_objects(rng, image, mask, (0, h), (x + b + self.margin, w), 1 + color)
        image[:, :, x:x + b] = self._cue_colour(color)
        mask[:, x:x + b] = self.ignore_index
        _mirror_at_random(rng, image, mask, axis=-1)

    def _render_recurrence(self, rng, image, mask) -> None:
        h, w, b, d = self.height, self.width, self.cue_size, 2 * self.object_radius[1] + 1
        color = int(rng.integers(len(self.colors)))
        y = int(rng.integers(0, h - (b + self.margin + d) + 1))
        x = int(rng.integers(0, w - (b + self.margin + d) + 1))
        self._scatter_grey_objects(rng, image, mask, (y + b + self.margin, h), (x + b + self.margin, w), 1 + color)
        image[:, y:y + b, x:x + b] = self._cue_colour(color)
        mask[y:y + b, x:x + b] = self.ignore_index
        _mirror_at_random(rng, image, mask, axis=-2)
        _mirror_at_random(rng, image, mask, axis=-1)

    def _render_binding(self, rng, image, mask) -> None:
        h, w, b = self.height, self.width, self.cue_size
        wanted = max(2, self._count(rng, most=self.key_slots))
        # At least two classes: the first two objects differ, the others are free.
        first, second = rng.choice(len(self.colors), size=2, replace=False)
        classes = [int(first), int(second)] + [int(k) for k in rng.integers(len(self.colors), size=wanted - 2)]
        hues = _spread_hues(rng, wanted)
        # The object zone is kept at least two objects wide, so that two fit side by side.
        x = int(rng.integers(0, w - (b + self.margin + 2 * (2 * self.object_radius[1] + 1)) + 1))
        zone_cols = (x + b + self.margin, w)
        boxes: list[tuple[slice, slice]] = []
        objects = []
        for _ in range(200 * wanted):
            if len(objects) == wanted:
                break
            obj = self._object(rng, (0, h), zone_cols,
                               accept=lambda box: not any(_boxes_overlap(box, other) for other in boxes))
            if obj is not None:
                objects.append(obj)
                boxes.append(obj[:2])
        if len(objects) < 2:  # cannot happen with the checked sizes; kept as a guard
            raise RuntimeError("binding: could not place two objects")
        slots = rng.permutation(self.key_slots)[: len(objects)]
        for (rows, cols, shape), k, hue, slot in zip(objects, classes, hues, slots):
            tint = np.asarray(colorsys.hsv_to_rgb(hue, 0.6, 1.0), dtype=np.float32)
            stripes = self._stripes(rng, shape.shape[0])
            patch = image[:, rows, cols]
            patch[:, shape] = tint[:, None] * stripes[shape][None] + rng.normal(0.0, 0.03, (3, int(shape.sum())))
            mask[rows, cols][shape] = 1 + k
            top = int(slot) * b
            image[:, top:top + b, x:x + b] = 0.8 * tint[:, None, None]
            q = b // 4
            image[:, top + q:top + b - q, x + q:x + b - q] = self._cue_colour(k)
            mask[top:top + b, x:x + b] = self.ignore_index
        _mirror_at_random(rng, image, mask, axis=-1)

    def _render_global(self, rng, image, mask) -> None:
        # The first built-in task, drawn in the same order as before (results/all_heads.* stay
        # reproducible): colour, stripe, objects kept `margin` px from it along its short axis.
        h, w, b = self.height, self.width, self.cue_size
        color = int(rng.integers(len(self.colors)))
        by, bx = int(rng.integers(0, h - b + 1)), int(rng.integers(0, w - b + 1))
        horizontal = rng.random() < 0.5
        cue_rows = slice(by, by + b) if horizontal else slice(0, h)
        cue_cols = slice(0, w) if horizontal else slice(bx, bx + b)
        row_band = (cue_rows.start - self.margin, cue_rows.stop + self.margin)
        col_band = (cue_cols.start - self.margin, cue_cols.stop + self.margin)
        off_cue = lambda box: not (_overlaps((box[0].start, box[0].stop), row_band)  # noqa: E731
                                   and _overlaps((box[1].start, box[1].stop), col_band))
        self._scatter_grey_objects(rng, image, mask, (0, h), (0, w), 1 + color, accept=off_cue)
        image[:, cue_rows, cue_cols] = self._cue_colour(color)
        mask[cue_rows, cue_cols] = self.ignore_index


def _spread_hues(rng: np.random.Generator, count: int) -> list[float]:
    """``count`` hues in [0, 1), each at least ``_MIN_HUE_GAP`` from the others on the circle."""
    while True:
        hues = rng.uniform(0.0, 1.0, size=count)
        gaps = np.abs(hues[:, None] - hues[None, :])
        gaps = np.minimum(gaps, 1.0 - gaps) + np.eye(count)
        if gaps.min() >= _MIN_HUE_GAP:
            return [float(v) for v in hues]


def _mirror_at_random(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, axis: int) -> None:
    """Flip image (3, H, W) and mask (H, W) in place along ``axis`` (-2 rows, -1 columns), with probability 1/2."""
    if rng.random() < 0.5:
        image[:], mask[:] = np.flip(image, axis).copy(), np.flip(mask, axis).copy()


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _boxes_overlap(a: tuple[slice, slice], b: tuple[slice, slice]) -> bool:
    return all(_overlaps((p.start, p.stop), (q.start, q.stop)) for p, q in zip(a, b))
