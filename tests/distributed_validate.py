"""Validates a fixed model on a fixed small data set with N CPU processes; rank 0 writes the metrics.

Run by tests/integration/test_distributed.py as a script (``python tests/distributed_validate.py DEVICES OUT``):
Lightning's ``ddp`` strategy re-launches this same command once per extra process (gloo on CPU).
"""

import json
import sys

import lightning.pytorch as pl
import torch

from lit_seg.data import SyntheticDataModule
from lit_seg.models.heads import FCNHead
from lit_seg.train.module import SegmentationModule


def main(devices: int, out: str) -> None:
    pl.seed_everything(0, verbose=False)
    model = SegmentationModule(head=FCNHead, num_classes=4, encoder_name="resnet18", encoder_depth=3,
                               aux_weight=0.0)
    with torch.no_grad():  # a fixed model whose predictions vary over pixels and classes
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    # 8 images: 4 per process, so the distributed sampler adds no padding duplicates.
    data = SyntheticDataModule(task="global", image_size=(48, 48), num_colors=3, margin=4, val_size=8, batch_size=2,
                               num_workers=0, train_size=8, test_size=8)
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    (metrics,) = trainer.validate(model, datamodule=data, verbose=False)
    if trainer.global_rank == 0:
        with open(out, "w") as f:
            json.dump({"world_size": trainer.world_size, **{k: float(v) for k, v in metrics.items()}}, f)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
