"""Tiny data sets in the official on-disk layouts, written into a test's tmp_path.

Each writer returns the root to pass to ``build_dataset``; images are random RGB (8x16 unless
told), masks hold the given stored values tiled over the image, row by row.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (8, 16)  # (H, W)
# The VOC colour map's first entries and 255's cream colour, as in the real palette PNGs.
VOC_PALETTE_HEAD = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128)]


def tiled(values: Sequence[int], size: tuple[int, int] = SIZE, dtype=np.uint8) -> np.ndarray:
    """(H, W) array repeating ``values`` in row-major order."""
    count = size[0] * size[1]
    return np.resize(np.asarray(values, dtype=dtype), count).reshape(size)


def write_image(path: Path, size: tuple[int, int] = SIZE, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    return path


def write_mask(path: Path, values: np.ndarray, palette: bool = False) -> Path:
    """A grey PNG of ``values``, or a palette PNG whose indices are ``values`` (VOC style)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if values.dtype == np.uint16:
        Image.fromarray(values).save(path)  # 16-bit grey
        return path
    image = Image.fromarray(values.astype(np.uint8), "P" if palette else "L")
    if palette:
        colours = [c for rgb in VOC_PALETTE_HEAD for c in rgb]
        colours += [40, 40, 40] * (256 - len(VOC_PALETTE_HEAD))
        colours[255 * 3:] = [224, 224, 192]
        image.putpalette(colours)
    image.save(path)
    return path


def write_cityscapes(root: Path, splits: Sequence[str] = ("train", "val"),
                     label_ids: Sequence[int] = tuple(range(34))) -> Path:
    """``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` + ``gtFine/.../*_gtFine_labelIds.png``:
    two frames in one city and one in another per split; masks tile ``label_ids``."""
    frames = [("aachen", "aachen_000000_000019"), ("aachen", "aachen_000001_000019"),
              ("bochum", "bochum_000000_000313")]
    for split in splits:
        for seed, (city, frame) in enumerate(frames):
            write_image(root / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png", seed=seed)
            write_mask(root / "gtFine" / split / city / f"{frame}_gtFine_labelIds.png", tiled(label_ids))
    return root


def write_voc(root: Path, values: Sequence[int] = (0, 1, 15, 20, 255), aug: bool = False) -> Path:
    """``VOCdevkit/VOC2012`` with 3 images (train 2, val 1, trainval 3); palette masks tile
    ``values``; with ``aug``, grey ``SegmentationClassAug`` masks and ``trainaug.txt`` (all 3)."""
    voc = root / "VOCdevkit" / "VOC2012"
    ids = ["2007_000032", "2007_000039", "2007_000063"]
    for seed, image_id in enumerate(ids):
        write_image(voc / "JPEGImages" / f"{image_id}.jpg", seed=seed)
        write_mask(voc / "SegmentationClass" / f"{image_id}.png", tiled(values), palette=True)
        if aug:
            write_mask(voc / "SegmentationClassAug" / f"{image_id}.png", tiled(values))
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "train.txt").write_text("\n".join(ids[:2]) + "\n")
    (lists / "val.txt").write_text(ids[2] + "\n")
    (lists / "trainval.txt").write_text("\n".join(ids) + "\n")
    if aug:
        (lists / "trainaug.txt").write_text("\n".join(ids) + "\n")
    return root


def write_ade20k(root: Path, values: Sequence[int] = (0, 1, 2, 150)) -> Path:
    """``ADEChallengeData2016`` with 2 training and 1 validation image; grey masks tile ``values``."""
    ade = root / "ADEChallengeData2016"
    names = {"training": ["ADE_train_00000001", "ADE_train_00000002"], "validation": ["ADE_val_00000001"]}
    for folder, stems in names.items():
        for seed, stem in enumerate(stems):
            write_image(ade / "images" / folder / f"{stem}.jpg", seed=seed)
            write_mask(ade / "annotations" / folder / f"{stem}.png", tiled(values))
    return ade


def write_folder(root: Path, class_names: Sequence[str] = ("sky", "road", "car", "tree", "person"),
                 values: Sequence[int] = (0, 1, 2, 3, 4, 255), splits: Sequence[str] | None = ("train", "val"),
                 size: tuple[int, int] = SIZE) -> Path:
    """``images/[<split>/]`` + ``masks/[<split>/]`` (2 images each, PNG and JPEG) + ``classes.txt``;
    ``splits=None`` writes the flat layout."""
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(class_names) + "\n")
    for split in splits or [None]:
        sub = Path(split) if split else Path()
        for seed, image_name in enumerate(["a.png", "b.jpg"]):
            write_image(root / "images" / sub / image_name, size=size, seed=seed)
            write_mask(root / "masks" / sub / f"{Path(image_name).stem}.png", tiled(values, size))
    return root
