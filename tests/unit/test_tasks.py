"""The built-in tasks: each generator deterministic, and the property each task is built on
checked on every one of a few hundred samples, against the real networks where the property is
"this head cannot see the cue" (the support of the input gradient, lit_seg.study.receptive_field)."""

import colorsys

import numpy as np
import pytest
import torch

from lit_seg.data.synthetic import PALETTE, TASK_LAYOUTS, TASKS, ContextCueDataset
from lit_seg.errors import ConfigError
from lit_seg.models.encoder import build_encoder
from lit_seg.models.encoder_decoder import EncoderDecoder
from lit_seg.models.heads import CCHead, FCNHead
from lit_seg.study.receptive_field import extents, input_gradient, open_attention_paths

SAMPLES = 300
CUE = 255


def _model(head) -> EncoderDecoder:
    # The built-in experiments' network: ResNet-18 to layer2 (experiments/base.yaml), random weights.
    torch.manual_seed(0)
    model = EncoderDecoder(build_encoder("resnet18", None, 8, 3), head, 4, aux_weight=0.0)
    return open_attention_paths(model).eval()


@pytest.fixture(scope="module")
def fcn():
    return _model(lambda c, n: FCNHead(c, n, channels=64))


@pytest.fixture(scope="module")
def ccnet():
    return {r: _model(lambda c, n, r=r: CCHead(c, n, channels=64, recurrence=r)) for r in (1, 2)}


def _cue_gradient(model, dataset, indices) -> list[float]:
    """Per sample: the largest input gradient on a cue pixel of a random projection of the logits
    of every object pixel (exactly 0 when no object pixel can see any cue pixel)."""
    images, masks = zip(*(dataset[i] for i in indices))
    images, masks = torch.stack(images), torch.stack(masks)
    objects = ((masks != 0) & (masks != CUE)).unsqueeze(1)
    weights = torch.rand(len(indices), 4, *masks.shape[-2:], generator=torch.Generator().manual_seed(0)) * objects
    grad = input_gradient(model, images, weights)
    return [float(g[m == CUE].max()) for g, m in zip(grad, masks)]


def _all_cue_gradients(model, dataset) -> np.ndarray:
    return np.array([g for start in range(0, len(dataset), 50)
                     for g in _cue_gradient(model, dataset, range(start, min(start + 50, len(dataset))))])


@pytest.mark.parametrize("task", TASKS)
def test_each_task_is_deterministic_per_seed_and_index(task):
    a, b, c = (ContextCueDataset(6, seed=s, task=task) for s in (1, 1, 2))
    for i in range(6):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
    assert not torch.equal(a[0][0], c[0][0])
    assert a[0][0].shape[1:] == TASK_LAYOUTS[task].image_size


def test_fcn_receptive_field_is_narrower_than_the_reach_margin(fcn):
    field = extents(fcn, (64, 160))
    # ResNet-18 to layer2 (99 px) + the FCN head's three 3x3 convs at stride 8 + bilinear upsampling.
    assert max(field["left"], field["right"]) < TASK_LAYOUTS["reach"].margin, field
    assert field["left"] >= 73 and field["right"] >= 73, "the field is not trivially small"


@pytest.mark.slow  # 300 samples through the network: about 10 s each
@pytest.mark.parametrize("task", ["reach", "binding"])
def test_fcn_cannot_see_the_cue_of_any_sample(fcn, ccnet, task):
    data = ContextCueDataset(SAMPLES, task=task, seed=5)
    assert (_all_cue_gradients(fcn, data) == 0).all(), "an object pixel of the FCN sees a cue pixel"
    # The check can fail: one criss-cross step sees the cue (every object's row crosses it).
    assert (_cue_gradients := _all_cue_gradients(ccnet[1], ContextCueDataset(20, task=task, seed=5)) > 0).all()


@pytest.mark.slow
def test_one_criss_cross_step_cannot_see_the_recurrence_cue_and_two_can(ccnet):
    data = ContextCueDataset(SAMPLES, task="recurrence", seed=5)
    assert (_all_cue_gradients(ccnet[1], data) == 0).all(), "CCNet R=1 sees the recurrence cue"
    assert (_all_cue_gradients(ccnet[2], ContextCueDataset(20, task="recurrence", seed=5)) > 0).all()


def test_recurrence_cue_is_off_every_object_row_and_column():
    margin = TASK_LAYOUTS["recurrence"].margin
    data = ContextCueDataset(SAMPLES, task="recurrence", seed=3)
    for i in range(len(data)):
        mask = data[i][1].numpy()
        cue_rows, cue_cols = np.nonzero(mask == CUE)
        rows, cols = np.nonzero((mask != 0) & (mask != CUE))
        assert len(rows) and np.abs(rows[:, None] - np.unique(cue_rows)).min() > margin
        assert np.abs(cols[:, None] - np.unique(cue_cols)).min() > margin


def test_reach_stripe_spans_the_height_and_every_object_shares_its_colour():
    data = ContextCueDataset(SAMPLES, task="reach", seed=3)
    for i in range(len(data)):
        image, mask = data[i]
        cue = (mask == CUE).numpy()
        assert cue.all(axis=0).sum() == 16 and cue.any(axis=0).sum() == 16, "one full-height stripe, 16 px wide"
        labels = set(mask.unique().tolist()) - {0, CUE}
        assert len(labels) == 1
        colour = image[:, mask == CUE].mean(1)
        assert torch.allclose(colour, torch.tensor(PALETTE[data.colors[labels.pop() - 1]]), atol=1e-6)


def _hue(rgb) -> float:
    return colorsys.rgb_to_hsv(*(float(v) for v in rgb))[0]


def _hue_distance(a: float, b: float) -> float:
    d = abs(a - b)
    return min(d, 1 - d)


def test_binding_each_object_has_one_key_of_its_tint_showing_its_class():
    data = ContextCueDataset(SAMPLES, task="binding", seed=3)
    b = data.cue_size
    for i in range(len(data)):
        image, mask = (t.numpy() for t in data[i])
        cue = mask == CUE
        columns = np.nonzero(cue.any(axis=0))[0]
        x = int(columns.min())
        assert len(columns) == b
        tops = [slot * b for slot in range(data.key_slots) if cue[slot * b, x]]  # keys sit in slots of b px
        assert cue.sum() == b * b * len(tops), "the cue pixels are the key squares"
        key_hues = [_hue(image[:, top, x:x + b].mean(1)) for top in tops]
        key_colours = [image[:, top + b // 2, x + b // 2] for top in tops]
        labels = set(np.unique(mask).tolist()) - {0, CUE}
        assert len(labels) >= 2, "at least two classes in every image"
        assert 2 <= len(tops) <= data.key_slots
        gaps = [_hue_distance(p, q) for j, p in enumerate(key_hues) for q in key_hues[j + 1:]]
        assert min(gaps) >= 1 / 4 - 0.02, "keys' tints at least 90 degrees apart: each partner unique"
        # Every object pixel's nearest key (by tint) shows the pixel's class colour.
        rows, cols = np.nonzero((mask != 0) & ~cue)
        pixel_hues = np.array([_hue(image[:, r, c]) for r, c in zip(rows, cols)])
        distance = np.abs(pixel_hues[:, None] - np.array(key_hues)[None, :])
        partner = np.minimum(distance, 1 - distance).argmin(1)
        palette = np.array([PALETTE[c] for c in data.colors])
        shown = np.abs(np.array(key_colours)[:, None, :] - palette[None]).sum(-1).argmin(1) + 1
        assert np.isclose(np.array(key_colours), palette[shown - 1], atol=1e-6).all(), "key centres are class colours"
        agree = (shown[partner] == mask[rows, cols]).mean()
        assert agree > 0.97, f"sample {i}: only {agree:.3f} of object pixels match their key's class"
        assert set(partner.tolist()) == set(range(len(tops))), "every key has its object"


def test_a_task_too_small_for_its_margin_is_a_config_error():
    with pytest.raises(ConfigError, match="task reach: image width must be at least"):
        ContextCueDataset(4, image_size=(64, 96), task="reach")
    with pytest.raises(ConfigError, match="task recurrence: image height and width"):
        ContextCueDataset(4, image_size=(96, 96), task="recurrence")
    with pytest.raises(ConfigError, match="unknown task 'reech'"):
        ContextCueDataset(4, task="reech")


@pytest.mark.slow
def test_receptive_field_command_reports_the_exact_and_the_effective_field(fcn, tmp_path, capsys):
    from lit_seg.study.receptive_field import effective_half_width, main
    from tests.conftest import EXPERIMENTS

    checkpoint = tmp_path / "fcn.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in fcn.state_dict().items()},
                "pytorch-lightning_version": "2.6.6"}, checkpoint)
    assert main([str(EXPERIMENTS / "fcn.yaml"), "--ckpt_path", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    field = extents(fcn, (64, 160))
    assert (f"{field['up']} px above, {field['down']} below, {field['left']} left and {field['right']} right"
            in out), out
    effective = effective_half_width(fcn, (64, 160))
    assert 0 < effective <= max(field.values()), "the effective field lies inside the exact one"
    assert f"+-{effective} px" in out


def test_receptive_field_command_refuses_a_checkpoint_of_another_model_in_one_line(tmp_path):
    from lit_seg.study.receptive_field import main
    from tests.conftest import EXPERIMENTS

    checkpoint = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.head.weight": torch.zeros(2)}, "pytorch-lightning_version": "2.6.6"},
               checkpoint)
    with pytest.raises(ConfigError, match=r"checkpoint .*other.ckpt is not a model of .*fcn.yaml \(.*\); pass"):
        main([str(EXPERIMENTS / "fcn.yaml"), "--ckpt_path", str(checkpoint)])
    with pytest.raises(ConfigError, match="not found"):
        main([str(EXPERIMENTS / "fcn.yaml"), "--ckpt_path", str(tmp_path / "missing.ckpt")])
