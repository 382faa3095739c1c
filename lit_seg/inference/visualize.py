"""Attention maps of a trained model, drawn over the image: plain functions, no Lightning.

    maps = attention_maps(module.model, image, points=[(40, 52)])   # {"step1": (Q, H, W), ...}
    overlay(denormalize(image), maps, [(40, 52)], prediction=predict(module.model, image)).save("a.png")

Works for any head through :meth:`DecodeHead.attention_maps`; each head decides which maps it
has (CCNet: one per recurrence step and their composition).
"""

from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from lit_seg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lit_seg.errors import ConfigError
from lit_seg.models.encoder_decoder import EncoderDecoder

Point = tuple[int, int]


class _EvalMode:
    """Eval mode and no_grad inside the block; the previous mode is restored after it."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.training = self.model.training
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()
        self.model.eval()

    def __exit__(self, *exc) -> None:
        self.model.train(self.training)
        self.no_grad.__exit__(*exc)


def _check_image(image: Tensor) -> None:
    if image.dim() != 3 or image.shape[0] != 3:
        raise ConfigError(f"expected one normalised image of shape (3, H, W), got {tuple(image.shape)}")


def check_points(points: Sequence[Point], size: tuple[int, int]) -> list[Point]:
    """``points`` as a list of int (row, col); raises :class:`ConfigError` for one outside ``size`` (H, W)."""
    height, width = size
    checked = []
    for point in points:
        if len(point) != 2:
            raise ConfigError(f"a point is (row, col), got {tuple(point)}")
        row, col = int(point[0]), int(point[1])
        if not (0 <= row < height and 0 <= col < width):
            raise ConfigError(f"point (row {row}, col {col}) lies outside the {height}x{width} image "
                              f"(rows 0..{height - 1}, cols 0..{width - 1})")
        checked.append((row, col))
    if not checked:
        raise ConfigError("no query points given")
    return checked


def to_feature_points(points: Sequence[Point], image_size: tuple[int, int], feature_size: tuple[int, int]) -> Tensor:
    """Image pixels -> (Q, 2) long (row, col) of the feature cell holding each pixel's centre."""
    (height, width), (h, w) = image_size, feature_size
    rows = [min(int((r + 0.5) * h / height), h - 1) for r, _ in points]
    cols = [min(int((c + 0.5) * w / width), w - 1) for _, c in points]
    return torch.tensor(list(zip(rows, cols)), dtype=torch.long).reshape(-1, 2)


def attention_maps(model: EncoderDecoder, image: Tensor, points: Sequence[Point],
                   upsample: str = "nearest") -> dict[str, Tensor]:
    """Named attention maps of the query ``points``, at image resolution: ``{name: (Q, H, W)}``.

    ``image``: one normalised image (3, H, W) on the model's device; ``points``: (row, col) in
    image pixels. The encoder runs in eval mode under ``no_grad`` (the model's mode is restored
    afterwards); the head's input ``features[head.in_index]`` (and a cascade head's
    ``extra_inputs``) and the points, mapped to the feature cell that holds them, go to
    ``head.attention_maps``. Its (1, Q, h', w') maps are
    upsampled to (H, W) with ``upsample``: ``nearest`` by default, so each feature cell shows as
    one flat block and a map's zeros stay zeros (criss-cross maps stay exactly a cross);
    ``bilinear`` gives smoother pictures. Returned on the CPU, float32.

    Raises :class:`ConfigError` when the head has no attention maps (e.g. FCN, PSP, ASPP) or
    a point lies outside the image.
    """
    _check_image(image)
    size = tuple(image.shape[-2:])
    points = check_points(points, size)
    head = model.head
    with _EvalMode(model):
        features = model.encoder(image[None])
        x = features[head.in_index]
        queries = to_feature_points(points, size, tuple(x.shape[-2:])).to(x.device)
        maps = head.attention_maps(x, queries, **head.extra_inputs(features))
    if not maps:
        raise ConfigError(f"{type(head).__name__} has no attention maps to show; use an attention head "
                          "(non-local, OCNet, DANet, CCNet, GCNet)")
    align = {} if upsample == "nearest" else {"align_corners": False}
    return {name: F.interpolate(m.float(), size=size, mode=upsample, **align)[0].cpu() for name, m in maps.items()}


def predict(model: EncoderDecoder, image: Tensor) -> Tensor:
    """The predicted label map (H, W) of one normalised image (3, H, W), in eval mode, on the CPU."""
    _check_image(image)
    with _EvalMode(model):
        return model(image[None])["out"][0].argmax(dim=0).cpu()


def denormalize(image: Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """A normalised (3, H, W) image -> uint8 RGB (H, W, 3)."""
    _check_image(image)
    image = image.detach().float().cpu()
    rgb = image * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def object_centres(mask: Tensor | np.ndarray, max_points: int = 4, background: int | None = 0,
                   ignore_index: int = 255, max_side: int = 256) -> list[Point]:
    """One point inside each of the largest objects of a label mask, or the image centre if none.

    Objects are 4-connected regions of one label, other than ``background`` (None: every label
    counts) and ``ignore_index``. Each gives the region's pixel nearest its centroid (inside the
    region even when it is not convex); the ``max_points`` largest are returned, largest first.
    Masks larger than ``max_side`` are searched at a stride, so big images stay fast.
    """
    mask = np.asarray(mask.cpu() if isinstance(mask, Tensor) else mask)
    height, width = mask.shape
    stride = max(1, -(-max(height, width) // max_side))
    small = mask[stride // 2::stride, stride // 2::stride]
    valid = small != ignore_index
    if background is not None:
        valid &= small != background
    seen = np.zeros_like(valid)
    objects = []  # (size, row, col) in the strided mask
    for start in zip(*np.nonzero(valid)):
        if seen[start]:
            continue
        label, pixels, queue = small[start], [], deque([start])
        seen[start] = True
        while queue:
            r, c = queue.popleft()
            pixels.append((r, c))
            for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= rr < small.shape[0] and 0 <= cc < small.shape[1] and not seen[rr, cc] \
                        and valid[rr, cc] and small[rr, cc] == label:
                    seen[rr, cc] = True
                    queue.append((rr, cc))
        coords = np.asarray(pixels, dtype=np.float64)
        nearest = coords[np.argmin(((coords - coords.mean(axis=0)) ** 2).sum(axis=1))]
        objects.append((len(pixels), int(nearest[0]), int(nearest[1])))
    if not objects:
        return [(height // 2, width // 2)]
    objects.sort(key=lambda o: -o[0])
    return [(min(r * stride + stride // 2, height - 1), min(c * stride + stride // 2, width - 1))
            for _, r, c in objects[:max_points]]


def _colorize(mask: Tensor | np.ndarray, palette: Sequence[Sequence[int]] | None, ignore_index: int) -> np.ndarray:
    from matplotlib import colormaps

    mask = np.asarray(mask.cpu() if isinstance(mask, Tensor) else mask).astype(np.int64)
    if palette is None:
        palette = (np.asarray(colormaps["tab10"].colors) * 255).round().astype(np.uint8)
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    rgb = palette[np.where(mask == ignore_index, 0, mask) % len(palette)]
    rgb[mask == ignore_index] = 255
    return rgb


def overlay(image_rgb: np.ndarray, maps: Mapping[str, Tensor], points: Sequence[Point],
            titles: Sequence[str] | None = None, prediction: Tensor | np.ndarray | None = None,
            target: Tensor | np.ndarray | None = None, palette: Sequence[Sequence[int]] | None = None,
            cmap: str = "jet", alpha: float = 0.5, ignore_index: int = 255, panel_inches: float = 2.4,
            dpi: int = 100) -> Image.Image:
    """A grid picture (PIL RGB image): one row per query point.

    Columns: the image with the query marked, the ``prediction`` and ``target`` label maps (if
    given; ``palette`` colours by class, default matplotlib's tab10; ``ignore_index`` white),
    then each map as a ``cmap`` heat overlay at ``alpha`` over the image, the query marked.
    ``maps``: ``{name: (Q, H, W)}`` as :func:`attention_maps` returns; each panel is scaled to
    its own maximum (given in the title), since the maps' ranges differ (a criss-cross step is
    concentrated, a composed map spread out). ``titles``: one per map (default: the names).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ConfigError(f"expected an RGB image (H, W, 3), got {image_rgb.shape}")
    height, width = image_rgb.shape[:2]
    points = check_points(points, (height, width))
    names = list(maps)
    titles = list(titles) if titles is not None else names
    if len(titles) != len(names):
        raise ValueError(f"{len(titles)} titles for {len(names)} maps")
    for name, m in maps.items():
        if tuple(m.shape) != (len(points), height, width):
            raise ValueError(f"map {name!r} has shape {tuple(m.shape)}, expected {(len(points), height, width)}")
    labels = [(title, _colorize(m, palette, ignore_index))
              for title, m in (("prediction", prediction), ("target", target)) if m is not None]

    columns = 1 + len(labels) + len(names)
    panel_h = panel_inches * height / max(height, width)
    panel_w = panel_inches * width / max(height, width)
    fig = Figure(figsize=(columns * panel_w + 0.2, len(points) * (panel_h + 0.35) + 0.1), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(points), columns, squeeze=False)
    for q, (row, col) in enumerate(points):
        panels = [("image", image_rgb, None)] + [(t, rgb, None) for t, rgb in labels]
        for name, title in zip(names, titles):
            heat = maps[name][q].detach().float().cpu().numpy()
            peak = float(heat.max())
            panels.append((f"{title} (max {peak:.3g})", image_rgb, heat / peak if peak > 0 else heat))
        for ax, (title, picture, heat) in zip(axes[q], panels):
            ax.imshow(picture, interpolation="nearest")
            if heat is not None:
                ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.plot([col], [row], marker="+", color="white", markersize=11, markeredgewidth=2.5)
            ax.plot([col], [row], marker="+", color="black", markersize=8, markeredgewidth=1.2)
            ax.set_title(f"{title}  @({row},{col})" if title == "image" else title, fontsize=8)
            ax.set_axis_off()
    fig.tight_layout(pad=0.3)
    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())


def prediction_overlay(image_rgb: np.ndarray, target: Tensor | np.ndarray | None, prediction: Tensor | np.ndarray,
                       class_names: Sequence[str], palette: Sequence[Sequence[int]] | None = None,
                       ignore_index: int = 255, alpha: float = 0.6, panel_inches: float = 2.4,
                       dpi: int = 100) -> Image.Image:
    """One picture (PIL RGB image): image | ground truth | prediction, with a legend of classes.

    The label maps are drawn over the image (``alpha`` of the class colour; ``palette`` as in
    :func:`overlay`, default matplotlib's tab10; ``ignore_index`` pixels white). The legend lists
    the classes present in the ground truth or the prediction, by ``class_names``, and "ignore"
    when the ground truth has ignored pixels; the prediction's title gives its pixel accuracy on
    the non-ignored pixels. Without a ``target`` (an image with no mask): image | prediction.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ConfigError(f"expected an RGB image (H, W, 3), got {image_rgb.shape}")
    prediction = np.asarray(prediction.cpu() if isinstance(prediction, Tensor) else prediction).astype(np.int64)
    labelled = target is not None
    target = (np.asarray(target.cpu() if isinstance(target, Tensor) else target).astype(np.int64) if labelled
              else np.full_like(prediction, ignore_index))
    height, width = image_rgb.shape[:2]
    if target.shape != (height, width) or prediction.shape != (height, width):
        raise ValueError(f"target {target.shape} and prediction {prediction.shape} must be the image's "
                         f"{(height, width)}")
    if palette is None:
        from matplotlib import colormaps

        palette = (np.asarray(colormaps["tab10"].colors) * 255).round().astype(np.uint8)
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)

    def blend(mask: np.ndarray) -> np.ndarray:
        rgb = _colorize(mask, palette, ignore_index).astype(np.float64)
        return (alpha * rgb + (1 - alpha) * image_rgb).round().astype(np.uint8)

    valid = target != ignore_index
    accuracy = float((prediction[valid] == target[valid]).mean()) if valid.any() else float("nan")
    present = sorted((set(np.unique(target[valid]).tolist()) | set(np.unique(prediction).tolist())) - {ignore_index})
    handles = [Patch(facecolor=palette[c % len(palette)] / 255, edgecolor="black", linewidth=0.5,
                     label=class_names[c] if 0 <= c < len(class_names) else str(c)) for c in present]
    if labelled and not valid.all():
        handles.append(Patch(facecolor="white", edgecolor="black", linewidth=0.5, label="ignore"))

    columns = min(len(handles), 4) or 1
    legend_rows = -(-len(handles) // columns)
    panel_h = panel_inches * height / max(height, width)
    panel_w = panel_inches * width / max(height, width)
    legend_h = 0.22 * legend_rows + 0.1
    panels = ([("image", image_rgb), ("ground truth", blend(target)),
               (f"prediction (pixel acc {accuracy:.3f})", blend(prediction))] if labelled
              else [("image", image_rgb), ("prediction", blend(prediction))])
    fig = Figure(figsize=(len(panels) * panel_w + 0.2, panel_h + 0.35 + legend_h), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, picture) in zip(axes, panels):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    fig.legend(handles=handles, loc="lower center", ncol=columns, fontsize=7, frameon=False,
               handlelength=1.2, columnspacing=1.0)
    fig.tight_layout(pad=0.3, rect=(0, legend_h / fig.get_figheight(), 1, 1))
    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())


def same_size(pictures: Sequence[Image.Image], fill: tuple[int, int, int] = (255, 255, 255)) -> list[Image.Image]:
    """The pictures padded at the right and bottom to the largest width and height among them.

    W&B draws the images logged under one key as one grid sized by the first; pictures with a
    different number of query points (rows) come out cropped or stretched there.
    """
    width, height = max(p.width for p in pictures), max(p.height for p in pictures)
    padded = []
    for picture in pictures:
        if picture.size != (width, height):
            canvas = Image.new("RGB", (width, height), fill)
            canvas.paste(picture.convert("RGB"), (0, 0))
            picture = canvas
        padded.append(picture)
    return padded
