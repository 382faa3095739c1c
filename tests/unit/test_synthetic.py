import numpy as np
import pytest
import torch

from lit_seg.data import ContextCueDataset, SyntheticDataModule
from lit_seg.errors import ConfigError


def test_samples_are_deterministic_per_seed_and_index():
    a, b, c = ContextCueDataset(8, seed=1), ContextCueDataset(8, seed=1), ContextCueDataset(8, seed=2)
    for i in range(8):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
    assert not torch.equal(a[0][0], c[0][0])


def test_sample_layout_and_labels():
    data = ContextCueDataset(64, image_size=(80, 112), num_colors=4, task="global")
    assert data.class_names == ["background", "object_red", "object_green", "object_blue", "object_yellow"]
    seen = set()
    for i in range(len(data)):
        image, mask = data[i]
        assert image.shape == (3, 80, 112) and image.dtype == torch.float32
        assert mask.shape == (80, 112) and mask.dtype == torch.int64
        assert 0 <= image.min() and image.max() <= 1
        labels = set(mask.unique().tolist())
        objects = labels - {0, 255}
        assert 255 in labels and len(objects) == 1, "one cue, and every object shares its class"
        seen |= objects
    assert seen == {1, 2, 3, 4}


def _gaps(mask: np.ndarray) -> tuple[int, int]:
    """Smallest row and column distance between any object pixel and any cue pixel."""
    cue_rows, cue_cols = np.nonzero(mask == 255)
    object_rows, object_cols = np.nonzero((mask != 0) & (mask != 255))
    row_gap = np.abs(object_rows[:, None] - np.unique(cue_rows)[None, :]).min()
    col_gap = np.abs(object_cols[:, None] - np.unique(cue_cols)[None, :]).min()
    return int(row_gap), int(col_gap)


def test_stripe_cue_spans_the_image_and_objects_keep_their_distance():
    data = ContextCueDataset(100, margin=16, task="global")
    for i in range(len(data)):
        mask = data[i][1].numpy()
        cue = mask == 255
        horizontal = cue.all(axis=1).any()
        assert horizontal or cue.all(axis=0).any(), "the stripe crosses the whole image"
        assert (cue.all(axis=1) if horizontal else cue.all(axis=0)).sum() == 16, "16 px thick: two cells at stride 8"
        row_gap, col_gap = _gaps(mask)
        assert (row_gap if horizontal else col_gap) > 16


def test_objects_look_alike_whatever_their_class():
    # Object pixels carry no colour: their channels agree to within the noise (every task but binding,
    # whose objects are tinted; tests/unit/test_tasks.py).
    for task in ("reach", "recurrence", "global"):
        _check_grey_objects(ContextCueDataset(32, task=task))


def _check_grey_objects(data):
    for i in range(len(data)):
        image, mask = data[i]
        objects = (mask != 0) & (mask != 255)
        spread = image[:, objects].max(0).values - image[:, objects].min(0).values
        assert spread.mean() < 0.1


def test_datamodule_splits_are_disjoint_and_normalised():
    dm = SyntheticDataModule(train_size=32, val_size=8, test_size=8, batch_size=4)
    assert dm.num_classes == 4 and dm.class_names[0] == "background"
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 64, 160) and masks.shape == (4, 64, 160), "the reach task's size by default"
    assert dm.image_size == (64, 160)
    val_images, _ = next(iter(dm.val_dataloader()))
    train_first = dm.splits["train"][0][0]
    assert not any(torch.equal(train_first, v) for v in val_images)
    assert abs(float(images.mean())) < 1.5


@pytest.mark.parametrize("cue_size", [0, 97])
def test_cue_size_out_of_range_is_a_config_error(cue_size):
    with pytest.raises(ConfigError, match="cue_size must be in 1..96"):
        ContextCueDataset(4, cue_size=cue_size, task="global")
