"""Same config and seed on the CPU -> identical metrics (docs/runs.md,
"Determinism"). Bitwise equality needs the same number of intra-op threads: the fits here run with
one (tests/fault_runs.py)."""

import csv

import torch

from lit_seg.data import SegmentationDataModule, SyntheticDataModule
from tests.fault_runs import run_folder
from tests.fixtures import write_folder


def _rows(folder) -> list[dict[str, str]]:
    with (folder / "metrics.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def test_same_config_and_seed_give_identical_metrics(fault_runs):
    cwd = fault_runs["cwd"]
    for name in ("ref", "again"):
        assert fault_runs[name].returncode == 0, fault_runs[name].stderr[-3000:]
    first, second = _rows(run_folder(cwd, "ref")), _rows(run_folder(cwd, "again"))
    assert len(first) == 14 and first == second  # every value, every step, to the last bit


def _batches(data, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = data.train_dataloader()
    loader.sampler.set_epoch(1)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == count:
            break
    return batches


def test_training_batches_do_not_depend_on_the_number_of_workers(tmp_path):
    # Order from (seed, epoch), each random crop/flip/colour from (seed, epoch, index): not from
    # the global RNG, nor from which worker process loads the sample.
    synthetic = [_batches(SyntheticDataModule(task="global", image_size=(32, 32), train_size=8, batch_size=4,
                                              num_workers=n), 2)
                 for n in (0, 2)]
    root = write_folder(tmp_path / "data", size=(48, 64))
    segmentation = [_batches(SegmentationDataModule("folder", str(root), crop_size=(32, 32), batch_size=2,
                                                    num_workers=n), 1) for n in (0, 2)]
    for without, with_workers in (synthetic, segmentation):
        assert all(torch.equal(a, b) for x, y in zip(without, with_workers) for a, b in zip(x, y))
    state = torch.get_rng_state()
    _batches(SegmentationDataModule("folder", str(root), crop_size=(32, 32), batch_size=2, num_workers=0), 1)
    assert torch.equal(state, torch.get_rng_state())  # loading drew nothing from the training RNG


def test_convolution_gradients_repeat_exactly_at_a_fixed_thread_count():
    # What makes a CPU run repeat: oneDNN splits the weight-gradient reduction of a convolution
    # over the intra-op threads, so the same count gives the same bits (another count gives other
    # low-order bits, hence OMP_NUM_THREADS pinned where runs are compared).
    conv = torch.nn.Conv2d(16, 16, 3, padding=1)
    x = torch.randn(4, 16, 24, 24)

    def gradient() -> torch.Tensor:
        conv.zero_grad()
        conv(x).square().sum().backward()
        return conv.weight.grad.clone()

    assert torch.equal(gradient(), gradient())
