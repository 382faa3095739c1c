import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from torchvision import tv_tensors

from lit_seg.data import SegmentationDataModule, build_dataset, eval_transform, train_transform
from lit_seg.data.datasets.cityscapes import LABEL_MAP as CITYSCAPES_LABEL_MAP
from lit_seg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, RandomCropMaxRatio
from lit_seg.errors import ConfigError
from tests.conftest import EXPERIMENTS, lit_seg
from tests.fixtures import tiled, write_ade20k, write_cityscapes, write_folder, write_image, write_mask, write_voc

# cityscapesScripts labels.py: label id -> train id for the 19 evaluated classes; every other id
# in 0..33 (void, parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer) -> 255.
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                        26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def expected_cityscapes(label_ids: np.ndarray) -> torch.Tensor:
    mapped = np.vectorize(lambda i: CITYSCAPES_TRAIN_IDS.get(int(i), 255))(label_ids)
    return torch.from_numpy(mapped.astype(np.int64))


def config_error(match_path: Path | str, call, *args, **kwargs) -> str:
    """Run ``call``; it must raise a one-line ConfigError naming ``match_path``; return the message."""
    with pytest.raises(ConfigError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert str(match_path) in message, message
    return message


# --- data sets ---------------------------------------------------------------------------------

def test_cityscapes_maps_label_ids_to_the_official_train_ids(tmp_path):
    root = write_cityscapes(tmp_path)
    dataset = build_dataset("cityscapes", root, "val")
    assert len(dataset) == 3
    assert [p.name for p, _ in dataset.samples][0] == "aachen_000000_000019_leftImg8bit.png"  # sorted
    image, mask = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (3, 8, 16)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert mask.dtype == torch.int64 and mask.shape == (8, 16)
    assert torch.equal(mask, expected_cityscapes(tiled(range(34))))
    assert mask.flatten()[7] == 0 and mask.flatten()[26] == 13 and mask.flatten()[0] == 255
    assert mask.flatten()[33] == 18
    # Ids past the table (a labelIds PNG never holds them) are ignored, not errors.
    assert (CITYSCAPES_LABEL_MAP[34:] == 255).all()
    assert dataset.num_classes == 19 and len(dataset.class_names) == 19 and len(dataset.palette) == 19
    assert dataset.class_names[0] == "road" and dataset.class_names[13] == "car"
    assert dataset.class_names[18] == "bicycle"
    assert dataset.palette[0] == (128, 64, 128) and dataset.palette[10] == (70, 130, 180)


def test_voc_reads_palette_indices_and_keeps_255(tmp_path):
    root = write_voc(tmp_path, values=(0, 1, 15, 20, 255))
    for given_root in (root, root / "VOCdevkit" / "VOC2012"):  # the parent of VOCdevkit, or VOC2012 itself
        dataset = build_dataset("voc", given_root, "train")
        assert len(dataset) == 2
        image, mask = dataset[0]
        assert image.shape == (3, 8, 16) and image.dtype == torch.float32
        assert torch.equal(mask, torch.from_numpy(tiled((0, 1, 15, 20, 255)).astype(np.int64)))
    assert len(build_dataset("voc", root, "val")) == 1 and len(build_dataset("voc", root, "trainval")) == 3
    assert dataset.num_classes == 21 and dataset.class_names[15] == "person"
    assert dataset.palette[:3] == [(0, 0, 0), (128, 0, 0), (0, 128, 0)]


def test_voc_trainaug_uses_the_augmented_masks(tmp_path):
    root = write_voc(tmp_path, aug=True)
    dataset = build_dataset("voc", root, "trainaug")
    assert len(dataset) == 3
    assert all(mask.parent.name == "SegmentationClassAug" for _, mask in dataset.samples)
    assert torch.equal(dataset[1][1], torch.from_numpy(tiled((0, 1, 15, 20, 255)).astype(np.int64)))


def test_ade20k_ignores_0_and_shifts_the_rest_down(tmp_path):
    root = write_ade20k(tmp_path, values=(0, 1, 2, 150, 255))
    dataset = build_dataset("ade20k", root, "train")
    assert len(dataset) == 2 and len(build_dataset("ade20k", root, "val")) == 1
    assert len(build_dataset("ade20k", tmp_path, "val")) == 1  # the folder holding ADEChallengeData2016
    image, mask = dataset[0]
    assert image.shape == (3, 8, 16)
    assert torch.equal(mask, torch.from_numpy(tiled((255, 0, 1, 149, 255)).astype(np.int64)))
    assert dataset.num_classes == 150 and len(dataset.palette) == 150
    assert dataset.class_names[0] == "wall" and dataset.class_names[149] == "flag"


@pytest.mark.parametrize("splits", [("train", "val"), None])
def test_folder_dataset(tmp_path, splits):
    root = write_folder(tmp_path, values=(0, 1, 4, 255), splits=splits)
    dataset = build_dataset("folder", root, "val")
    assert len(dataset) == 2 and dataset.num_classes == 5
    assert dataset.class_names == ["sky", "road", "car", "tree", "person"] and len(dataset.palette) == 5
    assert [image.name for image, _ in dataset.samples] == ["a.png", "b.jpg"]
    for image, mask in (dataset[0], dataset[1]):
        assert image.shape == (3, 8, 16) and image.dtype == torch.float32
        assert torch.equal(mask, torch.from_numpy(tiled((0, 1, 4, 255)).astype(np.int64)))


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cityscapes", "voc", "ade20k", "folder"])
def test_missing_root(tmp_path, name):
    config_error(tmp_path / "nowhere", build_dataset, name, tmp_path / "nowhere", "train")


def test_unknown_dataset_name(tmp_path):
    message = config_error(tmp_path, build_dataset, "kitti", tmp_path, "train")
    assert "cityscapes" in message and "ade20k" in message


def test_malformed_layout_names_the_expected_folder(tmp_path):
    root = write_cityscapes(tmp_path, splits=("train",))
    message = config_error(root / "leftImg8bit" / "val", build_dataset, "cityscapes", root, "val")
    assert "_leftImg8bit.png" in message
    write_image(root / "leftImg8bit" / "val" / "aachen" / "aachen_000000_000019_leftImg8bit.png")
    config_error(root / "gtFine" / "val", build_dataset, "cityscapes", root, "val")
    config_error(tmp_path, build_dataset, "voc", tmp_path, "train")  # no VOCdevkit/VOC2012/JPEGImages
    config_error(tmp_path / "images" / "training", build_dataset, "ade20k", tmp_path, "train")
    config_error(tmp_path / "images", build_dataset, "folder", tmp_path, "train")


def test_unknown_split_lists_the_valid_ones(tmp_path):
    message = config_error(tmp_path, build_dataset, "cityscapes", write_cityscapes(tmp_path), "training")
    assert "train, val, test" in message
    folder = write_folder(tmp_path / "folder")
    assert "train, val" in config_error(folder, build_dataset, "folder", folder, "test")


def test_no_samples(tmp_path):
    (tmp_path / "leftImg8bit" / "val" / "aachen").mkdir(parents=True)
    (tmp_path / "gtFine" / "val" / "aachen").mkdir(parents=True)
    message = config_error(tmp_path / "leftImg8bit" / "val", build_dataset, "cityscapes", tmp_path, "val")
    assert "no samples" in message


def test_image_without_its_mask(tmp_path):
    root = write_cityscapes(tmp_path)
    (root / "gtFine" / "val" / "bochum" / "bochum_000000_000313_gtFine_labelIds.png").unlink()
    image = root / "leftImg8bit" / "val" / "bochum" / "bochum_000000_000313_leftImg8bit.png"
    config_error(image, build_dataset, "cityscapes", root, "val")
    folder = write_folder(tmp_path / "folder")
    (folder / "masks" / "train" / "b.png").unlink()
    config_error(folder / "images" / "train" / "b.jpg", build_dataset, "folder", folder, "train")


def test_voc_trainaug_without_augmented_masks(tmp_path):
    root = write_voc(tmp_path)
    message = config_error(root / "VOCdevkit" / "VOC2012" / "SegmentationClassAug", build_dataset, "voc", root,
                           "trainaug")
    assert "trainaug.txt" in message


def test_folder_without_classes_txt(tmp_path):
    root = write_folder(tmp_path)
    (root / "classes.txt").unlink()
    config_error(root / "classes.txt", build_dataset, "folder", root, "train")


def test_corrupt_image_fails_on_access_naming_the_file(tmp_path):
    root = write_ade20k(tmp_path)
    broken = root / "images" / "training" / "ADE_train_00000002.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    dataset = build_dataset("ade20k", root, "train")  # listing does not decode
    dataset[0]
    config_error(broken, dataset.__getitem__, 1)


@pytest.mark.parametrize("name, writer, bad", [
    ("folder", lambda p: write_folder(p, values=(0, 1, 7, 255)), [7]),
    ("voc", lambda p: write_voc(p, values=(0, 30, 255)), [30]),
    ("ade20k", lambda p: write_ade20k(p, values=(1, 151, 200)), [151, 200]),
])
def test_mask_values_outside_the_classes(tmp_path, name, writer, bad):
    root = writer(tmp_path)
    dataset = build_dataset(name, root, "train")
    message = config_error(dataset.samples[0][1], dataset.__getitem__, 0)
    assert f"[{', '.join(map(str, bad))}]" in message


def test_colour_and_wrong_size_masks(tmp_path):
    root = write_folder(tmp_path, splits=None)
    mask_path = root / "masks" / "a.png"
    write_image(mask_path)  # an RGB colour mask
    dataset = build_dataset("folder", root, "train")
    assert "single-channel" in config_error(mask_path, dataset.__getitem__, 0)
    write_mask(mask_path, tiled([0, 1], (4, 4)))
    assert "size" in config_error(mask_path, dataset.__getitem__, 0)
    write_mask(mask_path, tiled([0, 300], dtype=np.uint16))  # 16-bit values past the table
    assert "[300]" in config_error(mask_path, dataset.__getitem__, 0)


# --- transforms --------------------------------------------------------------------------------

def _unnormalize(image: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return image * std + mean


def _blocks() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 48x80 image of grey blocks whose grey level encodes the label (higher label, brighter).

    Columns in bands of widths 10/25/15/30 (asymmetric, so a flip of one but not the other shows)
    times rows in bands of 20/28; label = column band + 4 * row band; one ignore block.
    """
    col_band = torch.repeat_interleave(torch.arange(4), torch.tensor([10, 25, 15, 30]))
    row_band = torch.repeat_interleave(torch.arange(2), torch.tensor([20, 28]))
    mask = col_band[None, :] + 4 * row_band[:, None]
    grey = 0.3 + 0.05 * torch.arange(8, dtype=torch.float32)
    image = grey[mask][None].repeat(3, 1, 1)
    mask[30:36, 40:48] = 255
    return image, mask, grey


@pytest.mark.parametrize("base_size", [None, (48, 80)])
def test_train_transform_keeps_image_and_mask_aligned(base_size):
    """Every transform is either geometric (applied alike to both) or per-pixel (same colour in,
    same colour out; grey stays grey under saturation and hue), so the pixels of one label must
    still share one grey level, and brighter labels stay at least as bright. Pixels within 2 of a
    label boundary or of the crop's edge are skipped: bilinear (image) and nearest (mask) resizing legitimately differ
    there by up to a pixel."""
    source_image, source_mask, _ = _blocks()
    transform = train_transform((40, 56), scale_range=(0.5, 2.0), base_size=base_size)
    checked = 0
    for seed in range(24):
        torch.manual_seed(seed)
        image, mask = transform(tv_tensors.Image(source_image), tv_tensors.Mask(source_mask))
        assert image.shape == (3, 40, 56) and image.dtype == torch.float32
        assert mask.shape == (40, 56) and mask.dtype == torch.int64
        assert set(mask.unique().tolist()) <= set(range(8)) | {255}
        # -1 outside: pixels near the crop's edge may blend with a neighbour that was cropped away.
        m = nnf.pad(mask.float()[None, None], (2, 2, 2, 2), value=-1.0)
        uniform = (nnf.max_pool2d(m, 5, 1) == -nnf.max_pool2d(-m, 5, 1))[0, 0]
        interior = uniform & (mask != 255)
        grey = _unnormalize(image)
        means = {}
        for label in mask[interior].unique().tolist():
            values = grey[:, interior & (mask == label)]
            assert values.max() - values.min() < 2e-3, (seed, label)
            means[label] = values.mean().item()
        labels = sorted(means)
        assert all(means[a] <= means[b] + 1e-4 for a, b in zip(labels, labels[1:])), (seed, means)
        checked += len(labels)
    assert checked > 24 * 2  # the check saw several labels per sample


def test_train_transform_pads_small_images_with_ignore():
    torch.manual_seed(0)
    image, mask = train_transform((64, 64), scale_range=(1.0, 1.0))(
        tv_tensors.Image(torch.rand(3, 20, 30)), tv_tensors.Mask(torch.zeros(20, 30, dtype=torch.int64)))
    assert image.shape == (3, 64, 64) and mask.shape == (64, 64)
    assert (mask[:20, :30] == 0).all() and (mask[20:] == 255).all() and (mask[:, 30:] == 255).all()
    assert (image[:, 20:] == 0).all()  # 0 after normalisation, as mmseg pads


def test_crop_respects_cat_max_ratio_when_possible():
    """Class 1 fills the left 28 of 64 columns: about half of the 32x32 windows hold both classes
    in a ratio under 0.75; with 10 retries virtually every crop does, without them about half."""
    mask = torch.zeros(64, 64, dtype=torch.int64)
    mask[:, :28] = 1
    image = torch.rand(3, 64, 64)

    def balanced_share(cat_max_ratio: float) -> float:
        crop = RandomCropMaxRatio((32, 32), cat_max_ratio=cat_max_ratio)
        good = 0
        for seed in range(100):
            torch.manual_seed(seed)
            cropped_image, cropped = crop(tv_tensors.Image(image), tv_tensors.Mask(mask))
            assert cropped_image.shape == (3, 32, 32) and cropped.shape == (32, 32)
            counts = torch.bincount(cropped.flatten(), minlength=2)
            good += int((counts > 0).all() and counts.max() < 0.75 * counts.sum())
        return good / 100

    assert balanced_share(0.75) >= 0.98
    assert balanced_share(1.0) <= 0.8


def test_eval_transform_only_normalises():
    image, mask = torch.rand(3, 8, 16), torch.randint(0, 5, (8, 16))
    out_image, out_mask = eval_transform()(tv_tensors.Image(image), tv_tensors.Mask(mask))
    assert torch.allclose(_unnormalize(out_image), image, atol=1e-6)
    assert torch.equal(out_mask, mask)


def test_dataset_applies_the_transform_and_returns_plain_tensors(tmp_path):
    dataset = build_dataset("folder", write_folder(tmp_path), "train", transform=train_transform((6, 6)))
    image, mask = dataset[0]
    assert type(image) is torch.Tensor and type(mask) is torch.Tensor
    assert image.shape == (3, 6, 6) and mask.shape == (6, 6) and mask.dtype == torch.int64


# --- data module -------------------------------------------------------------------------------

def test_segmentation_datamodule_yields_batches(tmp_path):
    data = SegmentationDataModule("folder", str(write_folder(tmp_path)), crop_size=(8, 8), batch_size=2,
                                  num_workers=0)
    assert data.num_classes == 5 and data.class_names == ["sky", "road", "car", "tree", "person"]
    data.setup("fit")
    images, masks = next(iter(data.train_dataloader()))
    assert images.shape == (2, 3, 8, 8) and masks.shape == (2, 8, 8) and masks.dtype == torch.int64
    images, masks = next(iter(data.val_dataloader()))
    assert images.shape == (1, 3, 8, 16) and masks.shape == (1, 8, 16)
    data.setup("test")
    assert len(data.test_dataloader()) == 2


def test_segmentation_datamodule_exposes_classes_and_fails_early(tmp_path):
    data = SegmentationDataModule("cityscapes", str(write_cityscapes(tmp_path / "cs")), num_workers=0)
    assert data.num_classes == 19 and data.class_names[0] == "road"
    with pytest.raises(ConfigError, match="nowhere"):
        SegmentationDataModule("cityscapes", str(tmp_path / "nowhere"))


@pytest.mark.parametrize("lines, message", [
    (["sky", "road", "sky"], "classes.txt line 3 repeats the name 'sky' of line 1: each class needs its own name"),
    (["sky", "", "road"], "classes.txt line 2 is blank: line k names mask value k - 1"),
])
def test_class_list_with_a_repeated_name_or_a_blank_line_is_refused_naming_the_line(tmp_path, lines, message):
    root = write_folder(tmp_path / "data", class_names=lines)
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_dataset("folder", root, "train")
    (root / "classes.txt").write_text("sky\nroad\ncar\n\n\n")  # blank lines at the end are no class
    assert build_dataset("folder", root, "train").class_names == ["sky", "road", "car"]


def _bad_data_set(tmp_path):
    from tests.fixtures import tiled, write_mask

    root = write_folder(tmp_path / "data", size=(32, 32))
    truncated = root / "images" / "train" / "b.jpg"
    truncated.write_bytes(truncated.read_bytes()[:300])  # cut off, as by an interrupted copy
    write_mask(root / "masks" / "train" / "a.png", tiled([1], (16, 32)))  # another size than its image
    write_mask(root / "masks" / "val" / "a.png", tiled([255], (32, 32)))  # nothing labelled
    write_mask(root / "masks" / "val" / "b.png", tiled([1, 9], (32, 32)))  # 9: no class
    return root


def test_check_data_reads_every_file_once_and_names_each_bad_one(tmp_path):
    import io

    from lit_seg.data.check import check_dataset

    root = _bad_data_set(tmp_path)
    out = io.StringIO()
    assert check_dataset("folder", str(root), ["train", "val"], workers=2, out=out) == (4, 3, 1)
    lines = out.getvalue().splitlines()
    assert sorted(lines) == sorted([
        f"lit-seg: error: mask {root}/masks/train/a.png is (16, 32) (H, W) but its image {root}/images/train/a.png is "
        f"(32, 32); every mask must have its image's size",
        f"lit-seg: error: cannot read image {root}/images/train/b.jpg: Image is incomplete or truncated; replace the "
        f"file (it is missing, corrupt or not a JPEG/PNG/WebP/GIF)",
        f"lit-seg: warning: mask {root}/masks/val/a.png has no labelled pixel (every value is ignore, 255): its image "
        f"{root}/images/val/a.png adds nothing to training; annotate it or remove it",
        f"lit-seg: error: mask {root}/masks/val/b.png holds values [9] that are no class of the folder data set "
        f"(5 classes, valid stored values: 0..4, 255); fix the mask or choose the data set its labels belong to",
    ])
    assert ".cpp" not in out.getvalue()  # no library source paths


@pytest.mark.slow
def test_check_data_command_exits_2_on_a_bad_file_and_makes_no_run_folder(tmp_path):
    root = _bad_data_set(tmp_path)
    done = lit_seg("check-data", "--config", str(EXPERIMENTS / "fcn.yaml"), "--data",
                   "lit_seg.data.SegmentationDataModule", "--data.init_args.dataset", "folder",
                   "--data.init_args.root", str(root), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert sum(line.startswith("lit-seg: error: ") for line in lines) == 3
    assert lines[-1].startswith(f"lit-seg: check-data: 4 image/mask pairs of folder at {root} (train, val) read in ")
    assert lines[-1].endswith("3 bad, 1 without labelled pixels")
    assert not (tmp_path / "runs").exists()


def test_data_set_names_are_a_type_the_cli_checks():
    import typing

    from lit_seg.data.datamodule import SegmentationDataModule
    from lit_seg.data.datasets import DATASETS, DatasetName

    assert typing.get_args(DatasetName) == tuple(DATASETS)
    assert typing.get_type_hints(SegmentationDataModule.__init__)["dataset"] == DatasetName
