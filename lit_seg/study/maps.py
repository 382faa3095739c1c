"""Draw a trained model's attention maps for a few query points into a PNG.

    lit-seg maps --ckpt_path runs/ccnet_r2/<run> --index 3
    lit-seg maps --ckpt_path runs/ccnet_r2/<run> --image photo.png --points 40,52 10,90 --output_dir maps/

The model is a run folder (its best checkpoint) or a ``.ckpt`` (:func:`lit_seg.api.load_module`).
``--index N`` takes sample N of the validation split of the run's data set, built from the run
folder's ``config.yaml`` (:func:`lit_seg.api.compose`); ``--image`` takes an image file as it is
(not resized). The picture goes to ``<output_dir>/attention_<index or image name>.png`` (default
``<run folder>/maps``). Points are (row, col) in image pixels; by default one per object of the
sample's mask (or the image centre). One row of the picture per point: the image, the
prediction (and the target with ``--index``), then each of the head's maps (CCNet: step1 ...
stepR and composed).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lit_seg import api
from lit_seg.errors import ConfigError
from lit_seg.inference.visualize import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    attention_maps,
    check_has_attention,
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
    parser.add_argument("--ckpt_path", required=True, type=Path,
                        help="the trained model: a run folder (its best checkpoint) or a .ckpt")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--image", type=Path, help="an image file, used at its own size")
    source.add_argument("--index", type=int, help="sample of the run's validation split (default 0)")
    parser.add_argument("--points", nargs="+", type=parse_point, metavar="R,C",
                        help="query points 'row,col' in image pixels (default: one per object, or the centre)")
    parser.add_argument("--output_dir", type=Path, default=None,
                        help="folder of the picture (default: <run folder>/maps)")
    parser.add_argument("--upsample", choices=["nearest", "bilinear"], default="nearest",
                        help="how maps are brought to image resolution")
    parser.add_argument("--max-points", type=int, default=4, help="most default points (objects)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def run_folder_of(path: Path) -> Path:
    """The run folder of a model given as a run folder or as one of its checkpoints."""
    return path if path.is_dir() else path.resolve().parent.parent


def validation_sample(run: Path, index: int):
    """(image, mask, palette) of sample ``index`` of the run's validation split (its ``config.yaml``)."""
    config = run / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"no {config}: --index needs the run folder's config (the data set); use --image")
    datamodule = api.compose(config).datamodule
    dataset = getattr(datamodule, "splits", {}).get("val")
    if dataset is None:
        datamodule.setup("validate")
        dataset = datamodule.val_dataloader().dataset
    if not 0 <= index < len(dataset):
        raise ConfigError(f"--index {index} is outside the validation split (0..{len(dataset) - 1})")
    image, mask = dataset[index][:2]
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
    module = api.load_module(args.ckpt_path, args.device)
    check_has_attention(module.model)  # before the data set is built
    mask, palette = None, None
    run_folder = run_folder_of(args.ckpt_path)
    if args.image is not None:
        image = read_image(args.image)
        name = args.image.stem
    else:
        image, mask, palette = validation_sample(run_folder, args.index or 0)
        name = f"val{args.index or 0}"
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
    out = (args.output_dir or run_folder / "maps") / f"attention_{name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = run(args)  # a ConfigError is the command's one error line
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
