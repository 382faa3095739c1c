"""What every file-backed data set shares: reading, label mapping, validation, errors.

A data set is a sorted list of (image file, mask file) pairs plus a 256-entry lookup table from
the values stored in the mask files to train ids. Listing and layout checks happen in the
constructor (cheap, so bad paths fail before training); decoding and value checks happen on
access, where the offending file is known.
"""

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image

from lit_seg.errors import ConfigError

IGNORE_INDEX = 255
INVALID = -1  # lookup-table entry for a stored value that is neither a class nor ignore

Transform = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[Tensor, Tensor]]
Sample = tuple[Path, Path]


class SegmentationDataset(Dataset):
    """(image, mask) pairs read from files.

    image: float32 (3, H, W) in [0, 1] at the file's own size; mask: int64 (H, W) of train ids,
    ``IGNORE_INDEX`` (255) where unlabelled. With a ``transform`` (a torchvision v2 transform),
    it is called as ``transform(tv_tensors.Image, tv_tensors.Mask)`` so that geometric ops treat
    the mask as a mask (nearest, ignore fill), and its outputs come back as plain tensors.

    Attributes:
        name: the data set's registry name (used in messages).
        split: the split this object reads.
        samples: sorted (image path, mask path) pairs.
        class_names: one name per train id.
        palette: one RGB colour per train id.
        base_size: (H, W) the rescale augmentation's ratios refer to (mmseg's ``scale``), or
            None for "the image's own size".
    """

    name: str = "segmentation"
    base_size: tuple[int, int] | None = None
    ignore_index: int = IGNORE_INDEX

    def __init__(
        self,
        split: str,
        samples: Sequence[Sample],
        class_names: Sequence[str],
        palette: Sequence[tuple[int, int, int]],
        label_map: Tensor,
        transform: Transform | None = None,
    ) -> None:
        if label_map.shape != (256,):
            raise ValueError(f"label_map must have 256 entries, got shape {tuple(label_map.shape)}")
        self.split = split
        self.samples = list(samples)
        self.class_names = list(class_names)
        self.palette = [tuple(int(v) for v in colour) for colour in palette]
        self.label_map = label_map.to(torch.int64)
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image_path, mask_path = self.samples[index]
        image = read_image(image_path)
        mask = self.map_labels(read_mask(mask_path), mask_path)
        check_sizes(image.shape[-2:], mask.shape, image_path, mask_path)
        if self.transform is not None:
            image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
            image, mask = image.as_subclass(Tensor), mask.as_subclass(Tensor)
        return image, mask

    def map_labels(self, stored: Tensor, path: Path) -> Tensor:
        """Stored mask values (H, W) -> train ids (H, W) int64; raises on values of no class."""
        stored = stored.to(torch.int64)
        # 16-bit masks can hold values past the table: they are never classes.
        beyond = stored > 255
        mapped = self.label_map[stored.clamp(0, 255)]
        invalid = (mapped == INVALID) | beyond
        if invalid.any():
            bad = stored[invalid].unique().tolist()
            shown = ", ".join(map(str, bad[:10])) + (f" (+{len(bad) - 10} more)" if len(bad) > 10 else "")
            raise ConfigError(
                f"mask {path} holds values [{shown}] that are no class of the {self.name} data set "
                f"({self.num_classes} classes{self._stored_values_hint()}); fix the mask or choose the "
                f"data set its labels belong to")
        return mapped

    def _stored_values_hint(self) -> str:
        valid = (self.label_map != INVALID).nonzero().flatten().tolist()
        return f", valid stored values: {_ranges(valid)}"


def check_sizes(image_size: Sequence[int], mask_size: Sequence[int], image_path: Path, mask_path: Path) -> None:
    if tuple(image_size) != tuple(mask_size):
        raise ConfigError(
            f"mask {mask_path} is {tuple(mask_size)} (H, W) but its image {image_path} is "
            f"{tuple(image_size)}; every mask must have its image's size")


def decode_rgb(path: Path) -> Tensor:
    """An image file -> uint8 (3, H, W), the whole file decoded; a one-line ConfigError if it cannot be."""
    try:
        return decode_image(str(path), mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as err:
        raise ConfigError(f"cannot read image {path}: {_one_line(err)}; replace the file (it is missing, "
                          f"corrupt or not a JPEG/PNG/WebP/GIF)") from err


def read_image(path: Path) -> Tensor:
    """An image file -> float32 (3, H, W) in [0, 1]; grey and RGBA files are converted to RGB."""
    return decode_rgb(path).to(torch.float32).div_(255.0)


def read_mask(path: Path) -> Tensor:
    """A single-channel mask file -> its stored values (H, W), palette PNGs as palette indices."""
    try:
        # UNCHANGED keeps a palette PNG's indices (not its RGB colours) and 16-bit values.
        mask = decode_image(str(path), mode=ImageReadMode.UNCHANGED)
    except (RuntimeError, OSError, ValueError) as err:
        raise ConfigError(f"cannot read mask {path}: {_one_line(err)}; replace the file (it is missing, "
                          f"corrupt or not a PNG)") from err
    if mask.shape[0] != 1:
        raise ConfigError(f"mask {path} has {mask.shape[0]} channels; masks must be single-channel "
                          f"(grey or palette PNG) images of class indices, not colour images")
    return mask[0]


def label_table(pairs: Iterable[tuple[int, int]], default: int = INVALID) -> Tensor:
    """A 256-entry stored value -> train id table: ``pairs`` of (stored, train id), else ``default``."""
    table = torch.full((256,), default, dtype=torch.int64)
    for stored, train_id in pairs:
        table[stored] = train_id
    return table


def identity_table(num_classes: int) -> Tensor:
    """Stored values 0..num_classes-1 are the train ids, 255 is ignore, anything else is invalid."""
    return label_table([(i, i) for i in range(num_classes)] + [(IGNORE_INDEX, IGNORE_INDEX)])


def bit_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """The PASCAL VOC colour map (bits of the class index spread over R, G, B), for any count."""
    palette = []
    for index in range(num_classes):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.append((r, g, b))
    return palette


# Layout checks: each raises a one-line ConfigError naming the path and what was expected.

def require_root(root: str | Path, name: str, layout: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"{name} data root {root} does not exist or is not a folder; expected {layout}; "
                          f"set `root` to the folder that holds the data set")
    return root


def require_dir(path: Path, expected: str) -> Path:
    if not path.is_dir():
        raise ConfigError(f"missing folder {path}: expected {expected}; check `root` and the data set's layout")
    return path


def require_split(split: str, valid: Iterable[str], name: str, root: Path) -> None:
    valid = list(valid)
    if split not in valid:
        raise ConfigError(f"unknown split {split!r} for the {name} data set at {root}; "
                          f"valid splits: {', '.join(valid)}")


def require_samples(samples: Sequence[Sample], expected: str) -> None:
    if not samples:
        raise ConfigError(f"no samples found: expected {expected}")


def require_masks(samples: Sequence[Sample]) -> None:
    """Every listed mask file exists (checked up front: a missing one is a broken download)."""
    missing = [(image, mask) for image, mask in samples if not mask.is_file()]
    if missing:
        image, mask = missing[0]
        raise ConfigError(f"{len(missing)} of {len(samples)} images have no mask, e.g. image {image} has no "
                          f"{mask}; restore the missing masks or remove those images")


# torchvision's decoders prefix their messages with the C++ function and source file
# ("operator(), /__w/vision/.../decode_png.cpp:79, Out of bound read ..."): not for users.
_SOURCE_PREFIX = re.compile(r"(?:[\w:~<>()]+, )?/\S+\.(?:cpp|cc|cxx|c|h|hpp|cu):\d+,?\s*")


def _one_line(err: BaseException) -> str:
    return _SOURCE_PREFIX.sub("", " ".join(str(err).split())).strip() or type(err).__name__


def _ranges(values: Sequence[int]) -> str:
    """[0, 1, 2, 5, 255] -> '0..2, 5, 255'."""
    parts, start = [], None
    for i, value in enumerate(values):
        if start is None:
            start = value
        if i + 1 == len(values) or values[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}..{value}")
            start = None
    return ", ".join(parts)
