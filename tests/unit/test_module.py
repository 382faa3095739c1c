import math

import pytest
import torch
from lightning.pytorch import Trainer

from lit_seg.data import SyntheticDataModule
from lit_seg.models.heads import CCHead, FCNHead
from lit_seg.train.module import SegmentationModule
from lit_seg.train.optim import PolyLR


def small_module(head=FCNHead, **kwargs) -> SegmentationModule:
    args = dict(head=head, num_classes=4, encoder_name="resnet18", encoder_depth=3, aux_channels=16)
    return SegmentationModule(**{**args, **kwargs})


@pytest.mark.parametrize("head", [FCNHead, CCHead])
def test_outputs_and_loss_weights(head):
    module = small_module(lambda c, n: head(c, n, channels=32))
    images = torch.randn(2, 3, 64, 80)
    module.train()
    outputs = module.model(images)
    assert set(outputs) == {"out", "aux"} == set(module.model.loss_weights)
    assert module.model.loss_weights["aux"] == 0.4
    assert all(o.shape == (2, 4, 64, 80) for o in outputs.values())
    module.eval()
    assert module(images).shape == (2, 4, 64, 80)


def test_aux_head_reads_the_second_to_last_stage_and_can_be_disabled():
    module = SegmentationModule(head=FCNHead, num_classes=5, encoder_name="resnet18")
    assert module.model.aux_head.in_channels == 256  # ResNet-18 layer3
    assert module.model.head.in_channels == 512      # layer4
    without = small_module(aux_weight=0.0)
    assert without.model.aux_head is None and set(without.model.loss_weights) == {"out"}


def test_training_loss_is_the_weighted_sum_of_cross_entropies():
    module = small_module()
    module.train()
    images, masks = torch.randn(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64))
    masks[0, :10] = 255
    torch.manual_seed(1)
    logged = {}
    module.log = lambda name, value, **_: logged.__setitem__(name, value)
    module.log_dict = lambda d, **_: logged.update(d)
    loss = module.training_step((images, masks), 0)
    torch.manual_seed(1)
    outputs = module.model(images)
    ce = lambda o: torch.nn.functional.cross_entropy(o, masks, ignore_index=255)  # noqa: E731
    torch.testing.assert_close(loss, ce(outputs["out"]) + 0.4 * ce(outputs["aux"]))
    assert {"train/loss", "train/loss_out", "train/loss_aux"} <= set(logged)


def test_miou_is_dataset_level_from_one_confusion_matrix():
    module = small_module()
    module.class_names = ["a", "b", "c", "d"]
    # Two batches: per-image averaging would give another number than the dataset-level one.
    preds = [torch.tensor([[0, 0, 1, 1]]), torch.tensor([[1, 1, 1, 2]])]
    target = [torch.tensor([[0, 1, 1, 255]]), torch.tensor([[1, 1, 2, 2]])]
    for p, t in zip(preds, target):
        module.val_confmat.update(p, t)
    logged = {}
    module.log = lambda name, value, **_: logged.__setitem__(name, float(value))
    module.log_dict = lambda d, **_: logged.update({k: float(v) for k, v in d.items()})
    module._log_epoch_metrics("val")
    # Confusion over the 7 labelled pixels: class 0: tp 1, fp 1, fn 0 -> 1/2; class 1: tp 3,
    # fp 1 (pixel 4 of image 2 is... no: pred 1 on label 2) -> tp 3, fp 2, fn 0 -> 3/5;
    # class 2: tp 1, fp 0, fn 1 -> 1/2; class 3 absent everywhere -> NaN, left out.
    assert logged["val/IoU/a"] == pytest.approx(1 / 2)
    assert logged["val/IoU/b"] == pytest.approx(3 / 5)
    assert logged["val/IoU/c"] == pytest.approx(1 / 2)
    assert math.isnan(logged["val/IoU/d"])
    assert logged["val/mIoU"] == pytest.approx((1 / 2 + 3 / 5 + 1 / 2) / 3)
    assert logged["val/pixel_acc"] == logged["val/aAcc"] == pytest.approx(5 / 7)
    # Per-class accuracy TP / (TP + FN): a 1/1, b 3/4, c 1/2, d no label -> NaN.
    assert [logged[f"val/Acc/{c}"] for c in "abc"] == pytest.approx([1, 3 / 4, 1 / 2])
    assert math.isnan(logged["val/Acc/d"])
    assert logged["val/mAcc"] == pytest.approx((1 + 3 / 4 + 1 / 2) / 3)
    # Dice 2TP / (2TP + FP + FN): a 2/3, b 6/8, c 2/3; d NaN.
    assert [logged[f"val/Dice/{c}"] for c in "abc"] == pytest.approx([2 / 3, 6 / 8, 2 / 3])
    assert logged["val/mDice"] == pytest.approx((2 / 3 + 6 / 8 + 2 / 3) / 3)
    assert module.last_confmat.tolist() == [[1, 0, 0, 0], [1, 3, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]


def test_poly_schedule_steps_every_iteration():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.01)
    scheduler = PolyLR(optimizer, total_iters=100)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.01 * (1 - t / 100) ** 0.9 for t in range(100)]
    assert lrs == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_fit_steps_the_schedule_per_iteration(tmp_path):
    dm = SyntheticDataModule(task="global", image_size=(64, 64), train_size=16, val_size=8, test_size=8, batch_size=4)
    module = small_module(lambda c, n: CCHead(c, n, channels=16, recurrence=2))
    trainer = Trainer(max_epochs=2, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, dm)
    assert trainer.global_step == 8
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(0.0, abs=1e-12)  # poly reaches zero exactly at the last step
    assert trainer.lr_scheduler_configs[0].interval == "step"
