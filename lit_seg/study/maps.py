#!/usr/bin/env python
"""Draw a trained model's attention maps for a few query points into a PNG.

    lit-seg maps --ckpt runs/ccnet_r2/<version>/checkpoints/last.ckpt \
        --index 3 --out attention.png
    lit-seg maps --ckpt ... --image photo.png --points 40,52 10,90 --out a.png

The model comes from the checkpoint (``lightning fit`` stores the model's init config in it).
``--index N`` takes sample N of the validation split of the run's data set, rebuilt from the
run folder's ``config.yaml`` (beside ``checkpoints/``); ``--image`` takes an image file as it
is (not resized). Points are (row, col) in image pixels; by default one per object of the
sample's mask (or the image centre). One row of the picture per point: the image, the
prediction (and the target with ``--index``), then each of the head's maps (CCNet: step1 ...
stepR and composed).
"""

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image, UnidentifiedImageError

from lit_seg.errors import ConfigError
from lit_seg.inference.visualize import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    attention_maps,
    check_points,
    denormalize,
    object_centres,
    overlay,
    predict,
)


def parse_point(text: str) -> tuple[int, int]:
    try:
        row, col = (int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a point is 'row,col' in image pixels, got {text!r}") from None
    return row, col


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lit-seg maps", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, type=Path, help="checkpoint written by `lightning fit`")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--image", type=Path, help="an image file, used at its own size")
    source.add_argument("--index", type=int, help="sample of the run's validation split (default 0)")
    parser.add_argument("--points", nargs="+", type=parse_point, metavar="R,C",
                        help="query points 'row,col' in image pixels (default: one per object, or the centre)")
    parser.add_argument("--out", required=True, type=Path, help="PNG to write")
    parser.add_argument("--upsample", choices=["nearest", "bilinear"], default="nearest",
                        help="how maps are brought to image resolution")
    parser.add_argument("--max-points", type=int, default=4, help="most default points (objects)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def load_module(ckpt: Path, device: str):
    from lit_seg.train.module import SegmentationModule

    if not ckpt.is_file():
        raise ConfigError(f"checkpoint {ckpt} does not exist")
    try:
        return SegmentationModule.load_from_checkpoint(ckpt, map_location=device).eval()
    except Exception as err:  # a file that is not a lit-seg checkpoint, or one of an older layout
        raise ConfigError(f"cannot rebuild the model from {ckpt}: {type(err).__name__}: {err}") from err


def data_config(ckpt: Path) -> dict:
    """``{"class_path", "init_args"}`` of the run's data module: from config.yaml, else the checkpoint."""
    config = ckpt.resolve().parent.parent / "config.yaml"
    if config.is_file():
        data = (yaml.safe_load(config.read_text()) or {}).get("data")
        if isinstance(data, dict) and "class_path" in data:
            return {"class_path": data["class_path"], "init_args": data.get("init_args") or {}}
    saved = dict(torch.load(ckpt, map_location="cpu", weights_only=False).get("datamodule_hyper_parameters") or {})
    if "_class_path" in saved:
        saved.pop("_instantiator", None)
        return {"class_path": saved.pop("_class_path"), "init_args": saved}
    raise ConfigError(f"no data set configuration for {ckpt} (no {config} and none in the checkpoint); "
                      "use --image")


def validation_sample(ckpt: Path, index: int):
    """(image, mask, palette) of sample ``index`` of the run's validation split."""
    config = data_config(ckpt)
    module_name, _, class_name = config["class_path"].rpartition(".")
    datamodule = getattr(importlib.import_module(module_name), class_name)(**config["init_args"])
    dataset = getattr(datamodule, "splits", {}).get("val")
    if dataset is None:
        datamodule.setup("validate")
        dataset = datamodule.val_dataloader().dataset
    if not 0 <= index < len(dataset):
        raise ConfigError(f"--index {index} is outside the validation split (0..{len(dataset) - 1})")
    image, mask = dataset[index]
    return image, mask, getattr(datamodule, "palette", None)


def read_image(path: Path) -> torch.Tensor:
    """An image file -> normalised (3, H, W) float tensor."""
    try:
        rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ConfigError(f"cannot read image {path}: {err}") from None
    image = torch.from_numpy(rgb).permute(2, 0, 1)
    return (image - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]


def run(args: argparse.Namespace) -> Path:
    module = load_module(args.ckpt, args.device)
    mask, palette = None, None
    if args.image is not None:
        image = read_image(args.image)
    else:
        image, mask, palette = validation_sample(args.ckpt, args.index or 0)
    size = tuple(image.shape[-2:])
    if args.points:
        points = check_points(args.points, size)
    elif mask is not None:
        points = object_centres(mask, max_points=args.max_points, ignore_index=module.ignore_index)
    else:
        points = [(size[0] // 2, size[1] // 2)]
    image = image.to(args.device)
    maps = attention_maps(module.model, image, points, upsample=args.upsample)
    picture = overlay(denormalize(image), maps, points, prediction=predict(module.model, image), target=mask,
                      palette=palette, ignore_index=module.ignore_index)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(args.out)
    return args.out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        out = run(args)
    except ConfigError as err:
        print(f"attention_maps: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
