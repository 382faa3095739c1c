"""Predictions on new images (lit_seg.inference.predict, lit_seg.load) and the Cityscapes result format, checked
against the official evaluator (cityscapesscripts) as the oracle."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from PIL import Image

import lit_seg
from lit_seg.data import SyntheticDataModule
from lit_seg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lit_seg.inference import multiscale_flip_inference
from lit_seg.inference.predict import SegmentationWriter, cityscapes_label_ids
from lit_seg.models.heads import FCNHead
from lit_seg.train.module import SegmentationModule
from tests.cli_fork import run_many
from tests.fixtures import tiled, write_image, write_mask

SIZES = {"a.png": (37, 53), "sub/b.jpg": (24, 40), "c.png": (64, 48)}


def small_module(num_classes: int = 4, **kwargs) -> SegmentationModule:
    module = SegmentationModule(head=lambda c, n: FCNHead(c, n, channels=16), num_classes=num_classes,
                                encoder_name="resnet18", encoder_depth=3, aux_weight=0.0, **kwargs)
    return module.eval()


def normalise(path: Path) -> torch.Tensor:
    image = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((image - mean) / std)[None]


@pytest.fixture
def images(tmp_path) -> Path:
    for seed, (name, size) in enumerate(SIZES.items()):
        write_image(tmp_path / "images" / name, size=size, seed=seed)
    return tmp_path / "images"


def predict(module, folder: Path, out: Path, **writer_args) -> SegmentationWriter:
    writer = SegmentationWriter(output_dir=str(out), **writer_args)
    trainer = Trainer(logger=False, callbacks=[writer], enable_progress_bar=False, enable_model_summary=False)
    trainer.predict(module, SyntheticDataModule(predict_dir=str(folder), num_workers=0), return_predictions=False)
    return writer


def test_writer_writes_one_palette_png_per_image_equal_to_the_models_argmax(images, tmp_path):
    module = small_module()
    writer = predict(module, images, tmp_path / "out", overlays=True)
    assert writer.written == 3
    for name, size in SIZES.items():
        path = tmp_path / "out" / Path(name).with_suffix(".png")
        with Image.open(path) as written:
            assert written.mode == "P" and written.size == (size[1], size[0])
            mask = np.asarray(written)
        with torch.no_grad():
            expected = module(normalise(images / name)).argmax(dim=1)[0].numpy()
        assert np.array_equal(mask, expected), name
        with Image.open(tmp_path / "out" / "overlays" / Path(name).with_suffix(".png")) as overlay:
            assert overlay.mode == "RGB" and overlay.width > 2 * 150  # image | prediction, with a legend


def test_writer_honours_multiscale_flip(images, tmp_path):
    module = small_module(eval_scales=(0.75, 1.0, 1.5), eval_flip=True)
    predict(module, images, tmp_path / "out")
    image = normalise(images / "a.png")
    with torch.no_grad():
        expected = multiscale_flip_inference(module, image, (0.75, 1.0, 1.5), True).argmax(dim=1)[0].numpy()
        plain = module(image).argmax(dim=1)[0].numpy()
    mask = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert np.array_equal(mask, expected) and not np.array_equal(mask, plain)


def test_load_segments_a_path_a_pil_image_and_a_tensor_like_the_model(ccnet_run, images):
    segmenter = lit_seg.load(ccnet_run)  # the run folder: its best checkpoint
    best = json.loads((ccnet_run / "summary.json").read_text())["best_checkpoint"]
    module = SegmentationModule.load_from_checkpoint(ccnet_run / "checkpoints" / Path(best).name).eval()
    with torch.no_grad():
        expected = module(normalise(images / "a.png")).argmax(dim=1)[0]
    picture = Image.open(images / "a.png")
    tensor = torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1).float() / 255
    assert segmenter.class_names == ["background", "object_red", "object_green", "object_blue"]
    assert torch.equal(segmenter(images / "a.png"), expected)
    assert torch.equal(segmenter(picture), expected) and torch.equal(segmenter(np.asarray(picture)), expected)
    assert torch.equal(segmenter(tensor), expected) and torch.equal(segmenter(tensor[None])[0], expected)
    flipped = lit_seg.load(ccnet_run, eval_flip=True)
    assert flipped.module.eval_flip and not segmenter.module.eval_flip
    assert np.array_equal(np.asarray(segmenter.colorize(expected)), expected.numpy())


def test_predict_command_writes_what_load_gives(ccnet_run, images, tmp_path):
    """`lit-seg predict --ckpt_path <run folder> --data.init_args.predict_dir <images>`: one PNG per
    image in the new run's folder, equal to lit_seg.load(run)(image)."""
    (done,) = run_many([(["predict", "--ckpt_path", str(ccnet_run), "--data.init_args.predict_dir", str(images),
                          "--writer.overlays", "true"], tmp_path, {"WANDB_MODE": "offline"})])
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "runs" / "ccnet_r2").iterdir()
    assert "wrote 3 masks to" in done.stderr
    segmenter = lit_seg.load(ccnet_run)
    for name in SIZES:
        mask = np.asarray(Image.open(run / "predictions" / Path(name).with_suffix(".png")))
        assert np.array_equal(mask, segmenter(images / name).numpy()), name
        assert (run / "predictions" / "overlays" / Path(name).with_suffix(".png")).is_file()


def test_label_table_is_the_official_one():
    from cityscapesscripts.helpers.labels import id2label, labels, trainId2label

    from lit_seg.data.datasets.cityscapes import CLASS_NAMES, LABEL_MAP, PALETTE

    for label in labels:
        if label.id >= 0:
            train_id = label.trainId if 0 <= label.trainId < 255 else 255
            assert int(LABEL_MAP[label.id]) == train_id, label.name
    assert all(int(LABEL_MAP[i]) == 255 for i in range(256) if i not in id2label)
    official = [trainId2label[t] for t in range(19)]
    assert CLASS_NAMES == [label.name for label in official]
    assert PALETTE == [tuple(label.color) for label in official]
    to_label_ids = cityscapes_label_ids()
    assert [int(to_label_ids[t]) for t in range(19)] == [label.id for label in official]


CITYSCAPES_CONFIG = """
seed_everything: 0
trainer:
  max_steps: 3
  enable_progress_bar: false
  enable_model_summary: false
  num_sanity_val_steps: 0
  limit_val_batches: 0
  logger:
    - class_path: lit_seg.train.fault_tolerance.ResumableCSVLogger
      init_args: {save_dir: runs}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {save_last: true}
    - class_path: lit_seg.api.callbacks.RunSummary
      init_args: {count_head_flops: false}
model:
  encoder_name: resnet18
  encoder_depth: 3
  aux_weight: 0.0
  head: {class_path: lit_seg.models.heads.FCNHead, init_args: {channels: 16}}
  optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 0.01}}
data:
  class_path: lit_seg.data.SegmentationDataModule
  init_args: {dataset: cityscapes, root: ROOT, crop_size: [32, 64], batch_size: 2, num_workers: 0}
"""


def write_cityscapes_fixture(root: Path) -> Path:
    """Two cities, 48x96 frames; masks hold every label id (void ones too) in blocks."""
    frames = [("aachen", "aachen_000000_000019"), ("aachen", "aachen_000001_000019"),
              ("bochum", "bochum_000000_000313")]
    for split in ("train", "val"):
        for seed, (city, frame) in enumerate(frames):
            write_image(root / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png", size=(48, 96), seed=seed)
            ids = np.random.default_rng(seed).permutation(34)
            blocks = np.kron(tiled(ids, (6, 12)), np.ones((8, 8), dtype=np.uint8))
            write_mask(root / "gtFine" / split / city / f"{frame}_gtFine_labelIds.png", blocks)
    return root


def test_official_evaluator_agrees_with_validate(tmp_path):
    """Train 3 steps, `lit-seg validate` the run, write its predictions in the Cityscapes result
    format, run cityscapesscripts' pixel-level evaluator on them: the same IoUs to 1e-4."""
    root = write_cityscapes_fixture(tmp_path / "cityscapes")
    config = tmp_path / "tiny.yaml"
    config.write_text(CITYSCAPES_CONFIG.replace("ROOT", str(root)))
    off = {"WANDB_MODE": "offline"}
    fit, validate, predict_ = run_many([
        (["fit", "--config", str(config), "--experiment", "trained"], tmp_path, off),
        (["validate", "--ckpt_path", "@glob:runs/trained/*", "--experiment", "val",
          "--trainer.limit_val_batches", "1.0"], tmp_path, off),
        (["predict", "--ckpt_path", "@glob:runs/trained/*", "--experiment", "pred", "--writer.format", "cityscapes",
          "--writer.output_dir", str(tmp_path / "results")], tmp_path, off),
    ], timeout=240)
    for done in (fit, validate, predict_):
        assert done.returncode == 0, done.stderr[-3000:]
    (val_run,) = (tmp_path / "runs" / "val").iterdir()
    ours = json.loads((val_run / "summary.json").read_text())["metrics"]

    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs
    from cityscapesscripts.helpers.labels import trainId2label

    gt = sorted(str(p) for p in (root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    written = sorted((tmp_path / "results").rglob("*.png"))
    assert [p.relative_to(tmp_path / "results").as_posix() for p in written] == [
        "aachen/aachen_000000_000019_leftImg8bit.png", "aachen/aachen_000001_000019_leftImg8bit.png",
        "bochum/bochum_000000_000313_leftImg8bit.png"]
    args = cs.args
    args.predictionPath, args.predictionWalk = str(tmp_path / "results"), None
    args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True
    predictions = [cs.getPrediction(args, path) for path in gt]
    confmat = cs.evaluateImgLists.__globals__["generateMatrix"](args)
    for prediction, truth in zip(predictions, gt):
        cs.evaluatePair(prediction, truth, confmat, {}, {}, args)
    official = {trainId2label[t].name: cs.getIouScoreForLabel(trainId2label[t].id, confmat, args) for t in range(19)}
    present = [v for v in official.values() if not np.isnan(v)]
    assert len(present) == 19 and len({round(v, 4) for v in present}) >= 3  # all labelled, 2+ predicted
    for name, value in official.items():
        assert ours[f"val/IoU/{name}"] == pytest.approx(value, abs=1e-4), name
    assert ours["val/mIoU"] == pytest.approx(cs.getScoreAverage(official, args), abs=1e-4)
