"""Any data set as a pair of folders plus a class list.

Layout::

    <root>/classes.txt                      one class name per line; line k names class k - 1
    <root>/images/[<split>/]<stem>.{jpg,jpeg,png,webp}
    <root>/masks/[<split>/]<stem>.png       grey or palette PNG: value k = class k, 255 = ignore

Images and masks are matched by file stem. With split folders (``images/train/``,
``images/val/``, ...) the valid splits are those folders' names; without them every split
reads the same files (useful for a quick test, not for a fair validation).
"""

from pathlib import Path

from lit_seg.data.datasets.base import (
    IGNORE_INDEX,
    SegmentationDataset,
    Transform,
    bit_palette,
    identity_table,
    require_dir,
    require_masks,
    require_root,
    require_samples,
    require_split,
)
from lit_seg.errors import ConfigError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")  # what torchvision.io.decode_image reads
MASK_SUFFIX = ".png"  # masks must be lossless


def read_class_names(path: Path) -> list[str]:
    """``classes.txt``: one name per line, line k (from 1) naming mask value k - 1; blank lines only
    at the end. A blank line inside would renumber every class after it, and a repeated name would
    give two classes one metric name (``val/IoU/<name>``): both are refused, naming the line."""
    if not path.is_file():
        raise ConfigError(f"missing class list {path}: expected a classes.txt with one class name per line "
                          f"(line k names mask value k - 1)")
    lines = [line.strip() for line in path.read_text().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ConfigError(f"class list {path} is empty: write one class name per line")
    first: dict[str, int] = {}
    for number, name in enumerate(lines, 1):
        if not name:
            raise ConfigError(f"class list {path} line {number} is blank: line k names mask value k - 1, so a blank "
                              f"line would renumber the classes after it; remove the line or name the class "
                              f"(e.g. unused_{number - 1})")
        if name in first:
            raise ConfigError(f"class list {path} line {number} repeats the name {name!r} of line {first[name]}: each "
                              f"class needs its own name (its metrics are named after it); rename one of them")
        first[name] = number
    names = lines
    if len(names) > IGNORE_INDEX:
        raise ConfigError(f"class list {path} names {len(names)} classes; at most {IGNORE_INDEX} fit in "
                          f"8-bit masks with {IGNORE_INDEX} as ignore")
    return names


class FolderDataset(SegmentationDataset):
    """``images/`` + ``masks/`` (+ optional split subfolders) + ``classes.txt``.

    Args:
        root: the folder holding ``images/``, ``masks/`` and ``classes.txt``.
        split: a subfolder name of ``images/`` when there are any; otherwise ignored.
        transform: optional v2 transform called as ``transform(image, mask)``.
    """

    name = "folder"

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None) -> None:
        root = require_root(root, self.name, "<root>/images/[<split>/]*.jpg|png, <root>/masks/[<split>/]*.png "
                                             "and <root>/classes.txt")
        self.root = root
        images_dir = require_dir(root / "images", f"{root}/images/[<split>/]<stem>.jpg|png next to "
                                                  f"{root}/masks/[<split>/]<stem>.png")
        masks_dir = require_dir(root / "masks", f"{root}/masks/[<split>/]<stem>.png next to "
                                                f"{root}/images/[<split>/]<stem>.jpg|png")
        class_names = read_class_names(root / "classes.txt")
        split_dirs = sorted(p.name for p in images_dir.iterdir() if p.is_dir())
        if split_dirs:
            require_split(split, split_dirs, self.name, root)
            images_dir = images_dir / split
            masks_dir = require_dir(masks_dir / split, f"{masks_dir / split}/<stem>.png, one mask per image in "
                                                       f"{images_dir}")
        images = sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        samples = [(image, masks_dir / f"{image.stem}{MASK_SUFFIX}") for image in images]
        require_samples(samples, f"{images_dir}/<stem>{{{','.join(IMAGE_SUFFIXES)}}}")
        require_masks(samples)
        super().__init__(split, samples, class_names, bit_palette(len(class_names)),
                         identity_table(len(class_names)), transform)
