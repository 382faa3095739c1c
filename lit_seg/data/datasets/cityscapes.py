"""Cityscapes (fine annotations), 19 train ids.

Layout (as downloaded from cityscapes-dataset.com)::

    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

The label table (label id -> train id, name, colour) is the official one from cityscapesScripts'
``labels.py``, which torchvision ships as ``torchvision.datasets.Cityscapes.classes``.
torchvision's ``Cityscapes`` class itself is not used: it lists files in ``os.listdir`` order,
does not check that masks exist, may unzip archives into ``root`` and returns label ids, not
train ids.
"""

from pathlib import Path

from torchvision.datasets import Cityscapes

from lit_seg.data.datasets.base import (
    IGNORE_INDEX,
    SegmentationDataset,
    Transform,
    label_table,
    require_dir,
    require_masks,
    require_root,
    require_samples,
    require_split,
)

SPLITS = ("train", "val", "test")
IMAGE_SUFFIX = "_leftImg8bit.png"
MASK_SUFFIX = "_gtFine_labelIds.png"

_TRAIN_CLASSES = sorted((c for c in Cityscapes.classes if 0 <= c.train_id < IGNORE_INDEX), key=lambda c: c.train_id)
CLASS_NAMES = [c.name for c in _TRAIN_CLASSES]
PALETTE = [tuple(c.color) for c in _TRAIN_CLASSES]
# Every label id 0..255 has an entry: ids without a train id (void classes, parking, rail
# track, guard rail, ...) and ids past the table map to ignore, as cityscapesScripts does.
LABEL_MAP = label_table(
    [(c.id, c.train_id if 0 <= c.train_id < IGNORE_INDEX else IGNORE_INDEX) for c in Cityscapes.classes if c.id >= 0],
    default=IGNORE_INDEX,
)


class CityscapesDataset(SegmentationDataset):
    """Cityscapes fine: 19 classes, label ids mapped to train ids (others -> 255).

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``train``, ``val`` or ``test`` (the public test masks are all "unlabeled").
        transform: optional v2 transform called as ``transform(image, mask)``.
    """

    name = "cityscapes"
    base_size = (1024, 2048)  # mmseg's Cityscapes scale: ratios refer to the full 1024x2048 frame

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None) -> None:
        layout = f"<root>/leftImg8bit/<split>/<city>/*{IMAGE_SUFFIX} and <root>/gtFine/<split>/<city>/*{MASK_SUFFIX}"
        self.root = root = require_root(root, self.name, layout)
        require_split(split, SPLITS, self.name, root)
        image_pattern = root / "leftImg8bit" / split / "<city>" / f"*{IMAGE_SUFFIX}"
        images_dir = require_dir(root / "leftImg8bit" / split, str(image_pattern))
        masks_dir = require_dir(root / "gtFine" / split, str(root / "gtFine" / split / "<city>" / f"*{MASK_SUFFIX}"))
        samples = [
            (image, masks_dir / image.parent.name / (image.name[: -len(IMAGE_SUFFIX)] + MASK_SUFFIX))
            for image in sorted(images_dir.glob(f"*/*{IMAGE_SUFFIX}"))
        ]
        require_samples(samples, str(image_pattern))
        require_masks(samples)
        super().__init__(split, samples, CLASS_NAMES, PALETTE, LABEL_MAP, transform)
