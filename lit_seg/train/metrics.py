"""Every segmentation metric people report, from one confusion matrix.

torchmetrics accumulates the matrix (``MulticlassConfusionMatrix``: summed across DDP processes,
``ignore_index`` pixels left out); :func:`scores` derives mmsegmentation's ``IoUMetric`` numbers
from it, so they are exact for the whole set (not averages of per-image values):

* ``mIoU`` and ``IoU/<class>``: TP / (TP + FP + FN);
* ``aAcc``: overall pixel accuracy, trace / sum (also logged as ``pixel_acc``, its earlier name);
* ``mAcc`` and ``Acc/<class>``: per-class accuracy (recall), TP / (TP + FN);
* ``mDice`` and ``Dice/<class>``: 2 TP / (2 TP + FP + FN), which is also mmseg's F-score
  (``beta=1``: the harmonic mean of precision and recall is the Dice coefficient).

A class absent from both labels and predictions has no IoU or Dice (NaN), a class absent from the
labels no accuracy (NaN); the means leave NaN out, as mmseg and the Cityscapes evaluator do.
"""

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def scores(confmat: Tensor) -> dict[str, Tensor]:
    """(C, C) confusion matrix, rows = label, columns = prediction -> per-class (C,) and scalar metrics.

    Keys: ``IoU``, ``Acc``, ``Dice`` (per class, NaN where undefined) and ``mIoU``, ``mAcc``,
    ``mDice``, ``aAcc`` (scalars).
    """
    confmat = confmat.to(torch.float64)
    tp = confmat.diagonal()
    label = confmat.sum(dim=1)  # TP + FN
    pred = confmat.sum(dim=0)  # TP + FP
    union = label + pred - tp
    nan = torch.tensor(math.nan, dtype=torch.float64, device=confmat.device)
    iou = torch.where(union > 0, tp / union.clamp_min(1), nan)
    acc = torch.where(label > 0, tp / label.clamp_min(1), nan)
    dice = torch.where(label + pred > 0, 2 * tp / (label + pred).clamp_min(1), nan)
    total = confmat.sum()
    return {
        "IoU": iou, "Acc": acc, "Dice": dice,
        "mIoU": iou.nanmean(), "mAcc": acc.nanmean(), "mDice": dice.nanmean(),
        "aAcc": tp.sum() / total if total > 0 else nan,
    }


def named_scores(confmat: Tensor, class_names: Sequence[str], prefix: str = "") -> dict[str, float]:
    """:func:`scores` as flat ``{prefix}mIoU``, ``{prefix}IoU/<class>``, ... floats (for logging)."""
    values = scores(confmat)
    out = {f"{prefix}{key}": float(values[key]) for key in ("mIoU", "mAcc", "mDice", "aAcc")}
    out[f"{prefix}pixel_acc"] = out[f"{prefix}aAcc"]
    for key in ("IoU", "Acc", "Dice"):
        out.update({f"{prefix}{key}/{name}": float(v) for name, v in zip(class_names, values[key])})
    return out


def confusion_figure(confmat: Tensor, class_names: Sequence[str], title: str = "", max_inches: float = 12.0):
    """The row-normalised confusion matrix as a PIL image: rows the label, columns the prediction,
    each row's share of its label's pixels (empty rows stay blank), class names on both axes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    matrix = confmat.to(torch.float64).cpu()
    rows = matrix.sum(dim=1, keepdim=True)
    normalised = torch.where(rows > 0, matrix / rows.clamp_min(1), torch.nan).numpy()
    n = len(class_names)
    side = min(max_inches, 2.5 + 0.38 * n)
    fig, ax = plt.subplots(figsize=(side, side), dpi=100)
    ax.imshow(normalised, vmin=0.0, vmax=1.0, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("label")
    if n <= 30:  # the shares themselves, while they still fit in the cells
        for i in range(n):
            for j in range(n):
                value = normalised[i, j]
                if value == value and value >= 0.005:
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if value > 0.5 else "black")
    ax.set_title(title or "confusion matrix (row-normalised)", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")
