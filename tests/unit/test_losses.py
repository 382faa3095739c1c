"""Cross-entropy with class weights and OHEM (lit_seg.train.losses)."""

import math

import torch
import torch.nn.functional as F

from lit_seg.models.heads import FCNHead
from lit_seg.train.losses import CrossEntropy, OhemCrossEntropy
from lit_seg.train.module import SegmentationModule


def logits_from_true_probs(true_probs: list[list[float]], target: torch.Tensor, num_classes: int = 3):
    """(B, C, 1, W) logits whose softmax gives each pixel's true class ``true_probs`` and splits
    the rest evenly over the other classes."""
    p = torch.tensor(true_probs).unsqueeze(1)  # (B, 1, W)
    probs = ((1 - p) / (num_classes - 1)).unsqueeze(1).repeat(1, num_classes, 1, 1)  # (B, C, 1, W)
    probs.scatter_(1, target.clamp(max=num_classes - 1).unsqueeze(1), p.unsqueeze(1))
    return probs.log()


def test_ohem_keeps_pixels_below_the_threshold():
    target = torch.tensor([[[0, 1, 2, 0, 1]]])
    logits = logits_from_true_probs([[0.1, 0.5, 0.69, 0.71, 0.9]], target)
    ohem = OhemCrossEntropy(thresh=0.7, min_kept=0)
    assert ohem.kept(logits, target)[0, 0].tolist() == [True, True, True, False, False]


def test_ohem_keeps_at_least_min_kept_per_image():
    target = torch.tensor([[[0, 1, 2, 0, 1]], [[2, 2, 1, 1, 0]]])
    logits = logits_from_true_probs([[0.1, 0.5, 0.69, 0.71, 0.9], [0.95, 0.9, 0.8, 0.705, 0.99]], target)
    # 3 hard pixels below 0.7; min_kept 2 per image = 4 per batch of 2: the 4 least confident pixels.
    kept = OhemCrossEntropy(thresh=0.7, min_kept=2).kept(logits, target)
    assert kept.sum() == 4
    assert kept[0, 0].tolist() == [True, True, True, False, False]
    assert kept[1, 0].tolist() == [False, False, False, True, False]
    # More than there are: everything but the single most confident pixel (mmseg's strict "<").
    assert OhemCrossEntropy(thresh=0.7, min_kept=100).kept(logits, target).sum() == 9


def test_ohem_respects_ignore_index():
    target = torch.tensor([[[0, 255, 2, 255, 1]]])
    logits = logits_from_true_probs([[0.1, 0.05, 0.69, 0.2, 0.9]], target)
    kept = OhemCrossEntropy(thresh=0.7, min_kept=0).kept(logits, target)
    assert kept[0, 0].tolist() == [True, False, True, False, False]
    # min_kept counts labelled pixels only: ignored ones are never kept.
    kept = OhemCrossEntropy(thresh=0.7, min_kept=10).kept(logits, target)
    assert kept[0, 0].tolist() == [True, False, True, False, False]
    all_ignored = torch.full_like(target, 255)
    loss = OhemCrossEntropy(min_kept=0)(logits.requires_grad_(), all_ignored)
    assert loss.item() == 0.0
    loss.backward()


def test_ohem_loss_is_cross_entropy_over_the_kept_pixels():
    target = torch.tensor([[[0, 1, 2, 0, 1]]])
    logits = logits_from_true_probs([[0.1, 0.5, 0.69, 0.71, 0.9]], target)
    loss = OhemCrossEntropy(thresh=0.7, min_kept=0)(logits, target)
    assert math.isclose(loss.item(), -(math.log(0.1) + math.log(0.5) + math.log(0.69)) / 3, rel_tol=1e-5)
    weights = [1.0, 2.0, 3.0]
    weighted = OhemCrossEntropy(thresh=0.7, min_kept=0, class_weights=weights)(logits, target)
    expected = -(1 * math.log(0.1) + 2 * math.log(0.5) + 3 * math.log(0.69)) / 6
    assert math.isclose(weighted.item(), expected, rel_tol=1e-5)


def test_class_weights_change_the_loss_as_weighted_cross_entropy():
    logits = torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 4, 5))
    target[0, 0, 0] = 255
    weights = [0.2, 1.0, 3.0]
    weighted = CrossEntropy(class_weights=weights)(logits, target)
    torch.testing.assert_close(weighted, F.cross_entropy(logits, target, weight=torch.tensor(weights),
                                                         ignore_index=255))
    torch.testing.assert_close(CrossEntropy()(logits, target), F.cross_entropy(logits, target, ignore_index=255))
    assert not torch.isclose(weighted, CrossEntropy()(logits, target))


def test_module_uses_ohem_on_head_outputs_and_ce_on_aux():
    module = SegmentationModule(head=lambda ch, n: FCNHead(ch, n, channels=8), num_classes=3, encoder_name="resnet18",
                                encoder_depth=3, aux_weight=0.4, aux_channels=8, loss="ohem", ohem_min_kept=1,
                                class_weights=[1.0, 2.0, 1.0])
    outputs = {"out": torch.randn(1, 3, 8, 8), "aux": torch.randn(1, 3, 8, 8)}
    masks = torch.randint(0, 3, (1, 8, 8))
    losses = module.losses(outputs, masks)
    w = torch.tensor([1.0, 2.0, 1.0])
    torch.testing.assert_close(losses["aux"], F.cross_entropy(outputs["aux"], masks, weight=w))
    kept = OhemCrossEntropy(0.7, 1).kept(outputs["out"], masks)
    torch.testing.assert_close(losses["out"], F.cross_entropy(outputs["out"], masks.masked_fill(~kept, 255), weight=w,
                                                              ignore_index=255))


def test_a_batch_without_labelled_pixels_gives_zero_loss_and_zero_gradients():
    from lit_seg.train.losses import masked_cross_entropy

    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    unlabelled = torch.full((2, 8, 8), 255)
    for loss in (CrossEntropy()(logits, unlabelled), CrossEntropy(class_weights=[1, 2, 3, 4])(logits, unlabelled),
                 OhemCrossEntropy(min_kept=4)(logits, unlabelled)):
        assert loss.item() == 0.0 and loss.requires_grad
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.equal(grad, torch.zeros_like(grad))
    # Labelled pixels whose classes all weigh 0: nothing counts either (PyTorch's mean gives NaN).
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    assert masked_cross_entropy(logits, target, torch.tensor([0.0, 1, 1, 1])).item() == 0.0
    # One image unlabelled, one labelled: PyTorch's mean over the labelled pixels.
    target = torch.randint(0, 4, (2, 8, 8))
    target[0] = 255
    torch.testing.assert_close(CrossEntropy()(logits, target), F.cross_entropy(logits, target, ignore_index=255))
