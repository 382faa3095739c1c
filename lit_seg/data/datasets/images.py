"""Images without masks, for ``lit-seg predict --data.init_args.predict_dir <folder>``."""

from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from lit_seg.data.datasets.base import read_image
from lit_seg.data.datasets.folder import IMAGE_SUFFIXES
from lit_seg.errors import ConfigError


class ImageFiles(Dataset):
    """Every image file under ``root`` (subfolders included, sorted), any size, no masks.

    Items are ``(image, index)``: the image float32 (3, H, W) at its own size, normalised by
    ``transform`` (e.g. ImageNet mean/std), and its index into ``files``, with which
    :class:`lit_seg.inference.predict.SegmentationWriter` names the output.
    """

    def __init__(self, root: str | Path, transform=None) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise ConfigError(f"predict_dir {self.root} does not exist or is not a folder; pass a folder of images "
                              f"({', '.join(IMAGE_SUFFIXES)})")
        self.files = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ConfigError(f"predict_dir {self.root} holds no images ({', '.join(IMAGE_SUFFIXES)}, subfolders "
                              f"included); pass the folder that holds them")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = read_image(self.files[index])
        return (self.transform(image) if self.transform is not None else image), index
