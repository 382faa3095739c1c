"""lit_seg.inference.query_dependence: the mean pairwise cosine distance between the attention maps of
different queries, against hand computations; its place in summary.json and the ablation row."""

import itertools
import json
import math
from functools import partial

import pytest
import torch
from torch import Tensor, nn

from lit_seg.inference.query_dependence import query_dependence, query_grid, query_map
from lit_seg.models import EncoderDecoder
from lit_seg.models.heads import HEADS, DAHead, DecodeHead, FCNHead, GCHead, NonLocalHead, OCRHead
from tests.conftest import randomize


class TinyEncoder(nn.Module):
    """Two feature maps: the image, and 6 channels at stride 4 (the heads' input)."""

    out_channels = (3, 6)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 4, stride=4)

    def forward(self, x: Tensor) -> list[Tensor]:
        return [x, self.conv(x)]


def tiny_model(head) -> EncoderDecoder:
    return randomize(EncoderDecoder(TinyEncoder(), head, num_classes=3, aux_weight=0.0))


def hand_distance(maps: Tensor) -> float:
    """Mean of 1 - cos over ordered pairs of different rows of (Q, N), one pair at a time, float64."""
    rows = maps.double()
    pairs = [(i, j) for i, j in itertools.product(range(len(rows)), repeat=2) if i != j]
    return sum(1 - float(rows[i] @ rows[j]) / float(rows[i].norm() * rows[j].norm()) for i, j in pairs) / len(pairs)


IMAGES = torch.randn(2, 3, 20, 24)  # features 5 x 6: 30 queries


def test_gc_head_is_exactly_query_independent():
    model = tiny_model(partial(GCHead, channels=8))
    assert query_dependence(model, IMAGES) == 0.0


class ChosenMaps(DecodeHead):
    """A head whose attention maps are given tensors (Q, 2, 3), one per call."""

    def __init__(self, in_channels, num_classes, tables: list[Tensor]) -> None:
        super().__init__(in_channels, num_classes, channels=4)
        self.tables = tables
        self.queries: list[Tensor] = []

    def attention_maps(self, x: Tensor, queries: Tensor) -> dict[str, Tensor]:
        self.queries.append(queries)
        return {"nonlocal": self.tables[len(self.queries) - 1][None]}


def test_chosen_maps_give_the_hand_computed_mean():
    torch.manual_seed(1)
    tables = [torch.rand(30, 2, 3) for _ in range(2)]
    tables[0][1] = tables[0][0]  # two equal maps: that pair is at distance 0
    tables[1][:, 0, 0] = 0.0
    model = EncoderDecoder(TinyEncoder(), partial(ChosenMaps, tables=tables), num_classes=3, aux_weight=0.0)
    expected = (hand_distance(tables[0].flatten(1)) + hand_distance(tables[1].flatten(1))) / 2
    assert query_dependence(model, IMAGES) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert all(q.tolist() == [[r, c] for r in range(5) for c in range(6)] for q in model.head.queries)  # every cell


def test_query_grid_is_every_cell_or_a_centred_strided_subsample():
    assert query_grid((5, 6)).tolist() == [[r, c] for r in range(5) for c in range(6)]
    # stride 3 (2 x 2 = 4 <= 6; stride 2 gives 3 x 3 = 9): rows 0, 3 of 0..4 and cols 1, 4 of 0..5
    assert query_grid((5, 6), max_queries=6).tolist() == [[0, 1], [0, 4], [3, 1], [3, 4]]
    wide = query_grid((1, 1000), max_queries=10)  # stride 100: 10 columns, centred
    assert wide[:, 0].tolist() == [0] * 10 and wide[:, 1].tolist() == [49 + 100 * k for k in range(10)]


def test_non_local_head_equals_a_direct_computation_from_its_maps():
    model = tiny_model(partial(NonLocalHead, channels=8)).train()
    value = query_dependence(model, IMAGES)
    assert model.training and model.head.training  # the mode is restored
    model.eval()
    queries = torch.tensor([[r, c] for r in range(5) for c in range(6)])
    expected = []
    with torch.no_grad():
        for image in IMAGES:
            x = model.encoder(image[None])[-1]
            expected.append(hand_distance(model.head.attention_maps(x, queries)["nonlocal"][0].flatten(1)))
    assert 0.0 < value < 1.0
    assert value == pytest.approx(sum(expected) / 2, rel=1e-6)


def test_a_head_of_two_maps_is_queried_on_the_last_and_measured_on_its_self_attention():
    """ANN reads the image (20 x 24) and the stride-4 map (5 x 6): the queries are the cells of the
    latter, and the value is the distance between their APNB maps."""
    model = tiny_model(partial(HEADS["ann"].build, channels=8))
    value = query_dependence(model, IMAGES)
    queries = torch.tensor([[r, c] for r in range(5) for c in range(6)])
    expected = []
    model.eval()
    with torch.no_grad():
        for image in IMAGES:
            maps = model.head.attention_maps(model.encoder(image[None]), queries)
            assert maps["afnb"].shape == (1, 30, 20, 24) and maps["apnb"].shape == (1, 30, 5, 6)
            expected.append(hand_distance(maps["apnb"][0].flatten(1)))
    assert 0.0 < value < 1.0
    assert value == pytest.approx(sum(expected) / 2, rel=1e-6)


def test_a_cascade_head_is_measured_with_its_first_stage_map():
    """OCR reads its soft regions off the second-to-last map (TinyEncoder's: the image itself)."""
    model = tiny_model(partial(OCRHead, channels=8)).eval()
    value = query_dependence(model, IMAGES)
    queries = torch.tensor([[r, c] for r in range(5) for c in range(6)])
    expected = []
    with torch.no_grad():
        for image in IMAGES:
            maps = model.head.attention_maps(model.head.select_inputs(model.encoder(image[None])), queries)
            expected.append(hand_distance(maps["ocr"][0].flatten(1)))
    assert 0.0 < value < 1.0
    assert value == pytest.approx(sum(expected) / 2, rel=1e-6)


@pytest.mark.parametrize("head", [partial(FCNHead, channels=8), partial(DAHead, channels=8, branches="cam")])
def test_heads_without_attention_maps_give_none(head):
    assert query_dependence(tiny_model(head), IMAGES) is None


@pytest.mark.parametrize("name", HEADS)
def test_every_head_variant_gives_a_distance_or_none(name):
    value = query_dependence(tiny_model(partial(HEADS[name].build, channels=8)), IMAGES)
    if name in ("fcn", "psp", "aspp", "danet_cam"):
        assert value is None
    else:
        signed = name == "nonlocal_dot"  # dot-product weights can be negative: 1 - cos up to 2
        assert 0.0 <= value <= (2.0 if signed else 1.0) and (value == 0.0) == (name == "gc")


def test_the_map_measured_per_head():
    a, b, c = torch.rand(3, 1, 4, 2, 2)
    assert query_map({"step1": a, "composed": b}) is b  # CCNet: the composition
    assert torch.equal(query_map({"pairwise": a, "unary": b}), a + b)  # DNL: both terms of the context
    assert query_map({"pyramid_2": a, "pyramid_1": b, "pyramid_6": c}) is b  # Pyramid-OC: the whole-image grid
    assert query_map({"afnb": a, "apnb": b}) is b  # ANN: the self-attention (APNB), not the fusion
    assert query_map({"ema": a}) is a and query_map({"ham": c}) is c
    assert query_map({"long_range": a, "short_range": b, "composed": c}) is c  # ISA: the rollout of its two steps
    assert query_map({"ocr": a}) is a  # OCR: pixel-region weights composed through the soft regions
    assert query_map({}) is None
    with pytest.raises(ValueError, match="no rule"):
        query_map({"something": a})


@pytest.mark.slow
def test_run_summary_writes_query_dependence_at_the_end_of_a_fit(tmp_path, monkeypatch):
    from lightning.pytorch import Trainer
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    from lit_seg.api.callbacks import RunSummary
    from lit_seg.data import SyntheticDataModule
    from lit_seg.train.module import SegmentationModule

    monkeypatch.setenv("WANDB_MODE", "disabled")
    data = SyntheticDataModule(task="global", image_size=(32, 32), train_size=4, val_size=3, batch_size=2,
                               num_workers=0)
    module = SegmentationModule(head=partial(NonLocalHead, channels=8), num_classes=data.num_classes,
                                encoder_name="resnet18", encoder_depth=3, aux_weight=0.0)
    wandb = WandbLogger(save_dir=tmp_path)
    trainer = Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0,
                      logger=[CSVLogger(tmp_path, name="run"), wandb], enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[RunSummary(count_head_flops=False, query_dependence_images=2)],
                      default_root_dir=tmp_path)
    trainer.fit(module, data)
    (path,) = tmp_path.glob("run/*/summary.json")
    saved = json.loads(path.read_text())["query_dependence"]
    expected = query_dependence(module.model.to("cpu"), [data.splits["val"][i][0] for i in range(2)])
    assert 0.0 < saved < 1.0 and saved == pytest.approx(expected, rel=1e-9)
    assert wandb.experiment.summary["query_dependence"] == saved


def test_ablate_row_takes_query_dependence_from_summary_json(tmp_path):
    from lit_seg.api.records import result_metrics
    from lit_seg.study import ablate, analysis, columns

    rows = []
    for name, value in (("nonlocal", 1.23456789e-6), ("fcn", None)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "summary.json").write_text(json.dumps({"metrics": {"val/mIoU": 0.5}, "query_dependence": value}))
        rows.append({"experiment": name, "status": "finished", **result_metrics(folder)})
    assert rows[0]["query_dependence"] == 1.235e-6 and rows[1]["query_dependence"] is None
    assert "query_dependence" in columns.COLUMNS
    ablate.write_rows(tmp_path / "results.csv", rows)
    runs = analysis.load_csv(tmp_path / "results.csv")
    assert runs.loc[0, "query_dependence"] == 1.235e-6 and math.isnan(runs.loc[1, "query_dependence"])
