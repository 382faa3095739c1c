"""PASCAL VOC 2012 segmentation, 21 classes (background + 20), optionally SBD-augmented.

Layout (the VOCtrainval_11-May-2012 archive)::

    <root>/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    <root>/VOCdevkit/VOC2012/SegmentationClass/<id>.png          palette PNG: index = class
    <root>/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
    # split "trainaug" (the usual 10,582-image set with SBD's extra masks):
    <root>/VOCdevkit/VOC2012/SegmentationClassAug/<id>.png       grey PNG: value = class
    <root>/VOCdevkit/VOC2012/ImageSets/Segmentation/trainaug.txt

``root`` may also be ``VOCdevkit`` or ``VOC2012`` itself. Masks are read as palette indices
(the colours are only for viewing); 255 marks object boundaries and "difficult" regions and
is ignored. torchvision's ``VOCSegmentation`` is not used: it insists on
``<root>/VOCdevkit/VOC2012``, knows no trainaug split, returns PIL images and fails with
``FileNotFoundError``/``RuntimeError`` rather than saying which file is missing.
"""

from pathlib import Path

from lit_seg.data.datasets.base import (
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

SPLITS = ("train", "val", "trainval", "trainaug")
CLASS_NAMES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]
PALETTE = bit_palette(len(CLASS_NAMES))
LABEL_MAP = identity_table(len(CLASS_NAMES))


def find_voc_root(root: Path) -> Path | None:
    """The VOC2012 folder under ``root`` (``root`` itself, ``root/VOC2012`` or ``root/VOCdevkit/VOC2012``)."""
    for candidate in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    return None


class VOCDataset(SegmentationDataset):
    """PASCAL VOC 2012: 21 classes, 255 ignored.

    Args:
        root: the folder holding ``VOCdevkit/VOC2012`` (or that folder itself).
        split: ``train``, ``val``, ``trainval`` or ``trainaug`` (needs ``SegmentationClassAug/``).
        transform: optional v2 transform called as ``transform(image, mask)``.
    """

    name = "voc"
    base_size = (512, 2048)  # mmseg's VOC scale (2048, 512): the short side is 512 * ratio

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None) -> None:
        layout = "<root>/VOCdevkit/VOC2012/JPEGImages/*.jpg (root may also be the VOC2012 folder)"
        root = require_root(root, self.name, layout)
        require_split(split, SPLITS, self.name, root)
        voc = find_voc_root(root)
        if voc is None:
            raise ConfigError(f"no VOC 2012 images under {root}: expected {root}/VOCdevkit/VOC2012/JPEGImages/*.jpg "
                              f"or {root}/JPEGImages/*.jpg; set `root` to the folder holding VOCdevkit")
        self.root = voc
        split_file = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
        masks_dir = voc / ("SegmentationClassAug" if split == "trainaug" else "SegmentationClass")
        if split == "trainaug":
            missing = [str(p) for p in (masks_dir, split_file) if not p.exists()]
            if missing:
                raise ConfigError(
                    f"split 'trainaug' needs the SBD-augmented masks, but {' and '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} missing; add SegmentationClassAug/ (grey index PNGs) "
                    f"and ImageSets/Segmentation/trainaug.txt, or use split 'train'")
        require_dir(masks_dir, f"{masks_dir}/<id>.png masks")
        if not split_file.is_file():
            raise ConfigError(f"missing split list {split_file}: expected one image id per line; "
                              f"check `root` or pick another split")
        ids = _read_ids(split_file)
        samples = [(voc / "JPEGImages" / f"{i}.jpg", masks_dir / f"{i}.png") for i in ids]
        require_samples(samples, f"image ids in {split_file}")
        missing_images = [image for image, _ in samples if not image.is_file()]
        if missing_images:
            raise ConfigError(f"{len(missing_images)} images listed in {split_file} are missing, e.g. "
                              f"{missing_images[0]}; restore JPEGImages/ or fix the list")
        require_masks(samples)
        super().__init__(split, samples, CLASS_NAMES, PALETTE, LABEL_MAP, transform)


def _read_ids(split_file: Path) -> list[str]:
    """Image ids, one per line; also accepts the "/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png"
    lines some trainaug lists use."""
    ids = []
    for line in split_file.read_text().splitlines():
        if line.strip():
            ids.append(Path(line.split()[0]).stem)
    return ids
