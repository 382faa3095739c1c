"""Attention-map visualisation: CCNet's composed maps, lit_seg.inference.visualize, the script, the callback."""

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lit_seg.errors import ConfigError
from lit_seg.inference.visualize import (
    attention_maps,
    denormalize,
    object_centres,
    overlay,
    same_size,
    to_feature_points,
)
from lit_seg.models.heads import ANNHead, CCHead, FCNHead, OCRHead
from lit_seg.train.module import SegmentationModule
from tests.conftest import randomize


def tiny_head(recurrence: int, channels: int = 8) -> CCHead:
    return randomize(CCHead([3, 6], num_classes=3, channels=channels, recurrence=recurrence, reduction=2)).eval()


def dense_attention(block, y: torch.Tensor) -> torch.Tensor:
    """Step attention as the full (B, N, N) matrix, from ``CrissCrossAttention.attention``."""
    column, row = block.attention(y)
    b, h, w = column.shape[:3]
    dense = torch.zeros(b, h, w, h, w, dtype=y.dtype)
    for i in range(h):
        for j in range(w):
            dense[:, i, j, :, j] += column[:, i, j, :]
            dense[:, i, j, i, :] += row[:, i, j, :]
    return dense.reshape(b, h * w, h * w)


QUERIES = torch.tensor([[0, 0], [2, 3], [4, 6], [1, 5]])


def test_r1_composed_is_step1_and_zero_off_the_criss_cross():
    head = tiny_head(1)
    x = torch.randn(2, 6, 5, 7)
    with torch.no_grad():
        maps = head.attention_maps(x, QUERIES)
    assert set(maps) == {"step1", "composed"}
    assert maps["composed"].shape == (2, len(QUERIES), 5, 7)
    torch.testing.assert_close(maps["composed"], maps["step1"])
    torch.testing.assert_close(maps["composed"].sum(dim=(-2, -1)), torch.ones(2, len(QUERIES)))
    for q, (r, c) in enumerate(QUERIES.tolist()):
        off_cross = torch.ones(5, 7, dtype=torch.bool)
        off_cross[r, :] = off_cross[:, c] = False
        assert (maps["composed"][:, q][:, off_cross] == 0).all()
        assert (maps["composed"][:, q][:, ~off_cross] > 0).all()


@pytest.mark.parametrize("recurrence", [2, 3])
def test_composed_equals_the_product_of_dense_step_matrices(recurrence):
    head = tiny_head(recurrence).double()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    with torch.no_grad():
        maps = head.attention_maps(x, QUERIES)
        ys = [head.conv_in(x)]  # each step's input
        for _ in range(recurrence - 1):
            ys.append(head.attention(ys[-1]))
        mats = [dense_attention(head.attention, y) for y in ys]  # A_1 ... A_R, (B, N, N) each
    # composed = e_p^T A_R ... A_1
    chain = mats[-1]
    for m in reversed(mats[:-1]):
        chain = chain @ m
    index = QUERIES[:, 0] * 7 + QUERIES[:, 1]
    expected = chain[:, index].reshape(2, len(QUERIES), 5, 7)
    torch.testing.assert_close(maps["composed"], expected)
    assert set(maps) == {f"step{r}" for r in range(1, recurrence + 1)} | {"composed"}
    # Each step map is that step's row of the dense matrix, on that step's input.
    for r, m in enumerate(mats, start=1):
        torch.testing.assert_close(maps[f"step{r}"], m[:, index].reshape(2, len(QUERIES), 5, 7))
    assert (maps["composed"] > 0).all()  # R >= 2 reaches every position
    torch.testing.assert_close(maps["composed"].sum(dim=(-2, -1)), torch.ones(2, len(QUERIES), dtype=torch.float64))


def small_model(head=CCHead, **head_args):
    module = SegmentationModule(head=lambda c, n: head(c, n, channels=16, **head_args), num_classes=3,
                                encoder_name="resnet18", encoder_depth=3, aux_weight=0.0)
    return randomize(module.model, std=0.1)


def test_attention_maps_at_image_resolution():
    model = small_model(recurrence=2).train()
    image = torch.randn(3, 64, 80)
    points = [(0, 0), (31, 40), (63, 79)]
    maps = attention_maps(model, image, points)
    assert model.training  # mode restored
    assert set(maps) == {"step1", "step2", "composed"}
    assert all(m.shape == (3, 64, 80) and m.dtype == torch.float32 for m in maps.values())
    # Nearest upsampling of 8x10 features: each cell is an 8x8 block; step1 stays a cross
    # (pixel (31, 40) lies in feature cell (3, 5): rows 24..31, cols 40..47).
    step1 = maps["step1"][1]
    cross = torch.zeros(64, 80, dtype=torch.bool)
    cross[24:32, :] = cross[:, 40:48] = True
    assert (step1[~cross] == 0).all() and (step1[cross] > 0).all()
    assert (maps["composed"] > 0).all()
    smooth = attention_maps(model, image, points, upsample="bilinear")
    assert smooth["composed"].shape == (3, 64, 80)
    assert to_feature_points(points, (64, 80), (8, 10)).tolist() == [[0, 0], [3, 5], [7, 9]]


def test_attention_maps_of_a_head_of_two_maps_query_the_last_one():
    """ANN on layer1 (stride 4) and layer2 (stride 8): the points map to layer2's cells, and each
    map is upsampled from its own resolution (AFNB's over layer1)."""
    model = small_model(ANNHead).eval()
    image = torch.randn(3, 64, 80)
    points = [(0, 0), (31, 40)]
    maps = attention_maps(model, image, points)
    assert set(maps) == {"afnb", "apnb"} and all(m.shape == (2, 64, 80) for m in maps.values())
    with torch.no_grad():
        direct = model.head.attention_maps(model.head.select_inputs(model.encoder(image[None])),
                                           torch.tensor([[0, 0], [3, 5]]))  # the layer2 cells (8 x 10 map)
    assert direct["afnb"].shape == (1, 2, 16, 20) and direct["apnb"].shape == (1, 2, 8, 10)
    for name in maps:
        torch.testing.assert_close(maps[name], F.interpolate(direct[name], size=(64, 80), mode="nearest")[0])


def test_a_cascade_head_gets_its_first_stage_map():
    """OCR's soft regions come from the encoder's second-to-last map (here layer1, stride 4):
    attention_maps hands both maps to the head (``head.select_inputs``)."""
    model = small_model(OCRHead).eval()
    image = torch.randn(3, 64, 80)
    points = [(0, 0), (31, 40), (63, 79)]
    maps = attention_maps(model, image, points)
    assert set(maps) == {"ocr"} and maps["ocr"].shape == (3, 64, 80)
    with torch.no_grad():
        features = model.encoder(image[None])
        assert features[-2].shape[-2:] == (16, 20) and features[-1].shape[-2:] == (8, 10)
        queries = to_feature_points(points, (64, 80), (8, 10))
        want = model.head.attention_maps([features[-2], features[-1]], queries)["ocr"]
    torch.testing.assert_close(maps["ocr"], torch.nn.functional.interpolate(want, size=(64, 80))[0])
    torch.testing.assert_close(maps["ocr"].sum(dim=(1, 2)), torch.full((3,), 64.0))  # 8 x 8 pixels per cell


def test_attention_maps_errors():
    image = torch.randn(3, 64, 80)
    with pytest.raises(ConfigError, match="FCNHead has no attention maps"):
        attention_maps(small_model(FCNHead), image, [(10, 10)])
    with pytest.raises(ConfigError, match="outside the 64x80 image"):
        attention_maps(small_model(recurrence=1), image, [(64, 10)])


def test_object_centres_and_overlay():
    mask = torch.zeros(40, 50, dtype=torch.long)
    mask[5:15, 5:25] = 1
    mask[20:35, 30:45] = 2
    mask[0:2, :] = 255
    assert object_centres(mask) == [(27, 37), (9, 14)]  # largest first; nearest pixel to the centroid
    assert object_centres(torch.zeros(40, 50, dtype=torch.long)) == [(20, 25)]
    maps = {"a": torch.rand(2, 40, 50), "b": torch.zeros(2, 40, 50)}
    rgb = denormalize(torch.randn(3, 40, 50))
    picture = overlay(rgb, maps, [(27, 37), (10, 15)], prediction=mask, target=mask)
    assert picture.mode == "RGB" and picture.width > 4 * 100 and picture.height > 2 * 100


def test_pictures_logged_together_are_padded_to_one_size():
    rgb = denormalize(torch.randn(3, 40, 50))
    maps = {"a": torch.rand(3, 40, 50)}
    one = overlay(rgb, {"a": maps["a"][:1]}, [(10, 10)])
    three = overlay(rgb, maps, [(10, 10), (20, 20), (30, 30)])  # a row per query point: taller
    assert one.height < three.height
    padded = same_size([one, three])
    assert [p.size for p in padded] == [three.size, three.size]
    assert np.array_equal(np.asarray(padded[0])[: one.height, : one.width], np.asarray(one))
    assert (np.asarray(padded[0])[one.height:] == 255).all()  # white below
    assert padded[1] is three


# --- end to end: a real (tiny) fit, shared by the script and callback tests ---------------

@pytest.fixture
def fitted_run(ccnet_run) -> Path:
    """The run folder of the shared short ccnet_r2 fit (experiments/base.yaml enables AttentionMapLogger)."""
    return ccnet_run


@pytest.mark.slow
def test_callback_writes_pngs_into_the_run_folder(fitted_run):
    pngs = sorted(p.name for p in (fitted_run / "attention").iterdir())
    assert pngs == ["epoch0_0.png", "epoch0_1.png", "epoch1_0.png", "epoch1_1.png"]  # 2 images x 2 epochs
    with Image.open(fitted_run / "attention" / "epoch0_0.png") as picture:
        picture.verify()


@pytest.fixture(scope="module")
def script():
    from lit_seg.study import maps

    return maps


@pytest.mark.slow
def test_script_end_to_end(fitted_run, tmp_path, script, capsys):
    out = tmp_path / "attention_val1.png"
    ckpt = str(fitted_run / "checkpoints" / "last.ckpt")
    assert script.main(["--ckpt_path", ckpt, "--index", "1", "--output_dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    with Image.open(out) as picture:
        picture.verify()
    with Image.open(out) as picture:
        # image, prediction, target, step1, step2, composed: six panels per row
        assert picture.mode == "RGB" and picture.width >= 6 * 150 and picture.height >= 150


@pytest.mark.slow
def test_script_with_an_image_file_and_points(fitted_run, tmp_path, script):
    image = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((48, 72, 3)) * 255).astype(np.uint8)).save(image)
    out = fitted_run / "maps" / "attention_photo.png"  # default: the run folder's maps/
    assert script.main(["--ckpt_path", str(fitted_run), "--image", str(image), "--points", "5,7", "40,70"]) == 0
    with Image.open(out) as picture:
        assert picture.height > 2 * 100  # one row per point


@pytest.mark.slow
def test_script_errors_are_one_line(fitted_run, tmp_path, script, capsys):
    from lit_seg.cli import main

    ckpt = fitted_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "maps"

    def error(*args) -> str:
        with pytest.raises(SystemExit) as stop:
            main(["maps", *args, "--output_dir", str(out)])
        assert stop.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lit-seg: error: "), lines
        return lines[0]

    assert "not found" in error("--ckpt_path", str(tmp_path / "missing.ckpt"))
    assert "outside the 64x64 image" in error("--ckpt_path", str(ckpt), "--index", "0", "--points", "10,64")
    # The same run with an FCN head: no attention to show.
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    saved["hyper_parameters"]["head"] = {"class_path": "lit_seg.models.heads.FCNHead", "init_args": {"channels": 8}}
    hparams = {k: v for k, v in saved["hyper_parameters"].items() if k not in ("head", "_instantiator")}
    fcn = SegmentationModule(head=partial(FCNHead, channels=8), **hparams)
    saved["state_dict"] = fcn.state_dict()
    (tmp_path / "fcn" / "checkpoints").mkdir(parents=True)
    torch.save(saved, tmp_path / "fcn" / "checkpoints" / "last.ckpt")
    assert "FCNHead has no attention maps" in error("--ckpt_path", str(tmp_path / "fcn" / "checkpoints" / "last.ckpt"))
    assert not out.exists()


@pytest.mark.slow
def test_callback_is_a_no_op_for_a_head_without_attention(tmp_path, caplog):
    from lightning.pytorch import Trainer

    from lit_seg.api.callbacks import AttentionMapLogger
    from lit_seg.data import SyntheticDataModule

    data = SyntheticDataModule(task="global", image_size=(32, 32), train_size=4, val_size=2, batch_size=2,
                               num_workers=0)
    module = SegmentationModule(head=partial(FCNHead, channels=8), num_classes=data.num_classes,
                                encoder_name="resnet18", encoder_depth=3, aux_weight=0.0)
    callback = AttentionMapLogger(every_n_epochs=1)
    trainer = Trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0,
                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[callback], default_root_dir=tmp_path)
    with caplog.at_level("INFO"):
        trainer.fit(module, data)
    assert [r.getMessage() for r in caplog.records if "AttentionMapLogger" in r.getMessage()] == [
        "AttentionMapLogger: FCNHead has no attention maps to show; use an attention head "
        "(non-local, OCNet, DANet, CCNet, GCNet); the callback does nothing"]
    assert not (tmp_path / "attention").exists()


@pytest.mark.slow
def test_callback_logs_its_pictures_to_wandb_in_one_size(tmp_path, monkeypatch):
    # Val images 0 and 1 of this set have 2 and 1 objects, so their overlays have 2 and 1 rows:
    # W&B draws the images of one key as one grid and needs them the same size.
    from lightning.pytorch import Trainer
    from lightning.pytorch.loggers import WandbLogger

    from lit_seg.api.callbacks import AttentionMapLogger
    from lit_seg.data import SyntheticDataModule

    class CapturingLogger(WandbLogger):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            self.logged = []

        def log_image(self, key, images, step=None, **kwargs):
            self.logged.append((key, images))

    monkeypatch.setenv("WANDB_MODE", "disabled")
    data = SyntheticDataModule(task="global", image_size=(48, 48), margin=4, train_size=4, val_size=2, batch_size=2,
                               num_workers=0)
    assert [len(object_centres(data.splits["val"][i][1])) for i in range(2)] == [2, 1]
    module = SegmentationModule(head=partial(CCHead, channels=8), num_classes=data.num_classes,
                                encoder_name="resnet18", encoder_depth=3, aux_weight=0.0)
    logger = CapturingLogger(save_dir=tmp_path)
    trainer = Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0,
                      logger=logger, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[AttentionMapLogger()],
                      default_root_dir=tmp_path)
    trainer.fit(module, data)
    ((key, images),) = logger.logged
    assert key == "val/attention" and len(images) == 2
    assert images[0].size == images[1].size
