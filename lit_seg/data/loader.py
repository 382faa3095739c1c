"""Train loaders that a run interrupted mid-epoch resumes exactly: same batches, same order, same augmentation.

Lightning restores a run's step, epoch and optimiser, but restarts a plain ``DataLoader`` at its
first batch and draws a new shuffle from the global RNG. Here:

- :class:`ResumableSampler` draws each epoch's order from ``(seed, epoch)`` alone, shards it over
  DDP processes itself, and can start after the batches already trained on;
- :class:`ResumableLoader` has ``state_dict``/``load_state_dict``: its position (epoch, batches
  handed out) goes into every checkpoint and back on resume (by Lightning, and by
  :class:`lit_seg.train.fault_tolerance.ResumeState` where Lightning 2.6 does not);
- with ``sample_seeds`` each sample's random augmentation is seeded from ``(seed, epoch, index)``,
  in whichever worker process it runs, so augmentation does not depend on the number of workers,
  on which batches a worker got, or on where the run was resumed;
- loaders carry their own generator, so iterating them never draws from the global RNG (which
  :class:`lit_seg.train.fault_tolerance.ResumeState` saves and restores for the model's dropout).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler


def mix_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from several integers (``seed + epoch`` would repeat across seeds)."""
    words = [int(v) & 0xFFFFFFFF for v in values] + [(int(v) >> 32) & 0xFFFFFFFF for v in values]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))


def training_seed() -> int:
    """The run's seed (``seed_everything`` puts it in ``PL_GLOBAL_SEED``, as Lightning's samplers read it)."""
    return int(os.environ.get("PL_GLOBAL_SEED", "0"))


class ResumableSampler(DistributedSampler):
    """Per-epoch permutation from ``(seed, epoch)``, this process's share of it, from position ``skip``.

    A :class:`~torch.utils.data.distributed.DistributedSampler` (so Lightning does not wrap it in
    another one under DDP): it reads the process group if there is one, pads the order to a
    multiple of the process count like the stock sampler and takes every ``num_replicas``-th index.
    Lightning calls ``set_epoch`` before each epoch. With ``sample_seeds`` it yields
    ``(index, seed)`` pairs for :class:`SeededSamples`.
    """

    def __init__(self, dataset: Dataset, seed: int, shuffle: bool = True, sample_seeds: bool = False) -> None:
        replicas, rank = ((dist.get_world_size(), dist.get_rank()) if dist.is_available() and dist.is_initialized()
                          else (1, 0))
        super().__init__(dataset, num_replicas=replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.sample_seeds = sample_seeds
        self.skip = 0  # indices of this epoch to leave out (already trained on); reset after one pass

    def __iter__(self) -> Iterator[Any]:
        size = len(self.dataset)  # type: ignore[arg-type]
        if self.shuffle:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(size, generator=generator).tolist()
        else:
            order = list(range(size))
        if self.total_size > size:
            order = (order * math.ceil(self.total_size / size))[: self.total_size]
        mine = order[self.rank: self.total_size: self.num_replicas]
        start, self.skip = self.skip, 0
        for index in mine[start:]:
            yield (index, mix_seed(self.seed, self.epoch, index)) if self.sample_seeds else index


class SeededSamples(Dataset):
    """``dataset[index]`` computed with torch's global RNG seeded from the sampler's per-sample seed.

    The global state outside is left as it was (``fork_rng``), so with ``num_workers=0`` loading
    does not disturb the training RNG either.
    """

    # Sample by sample (DataLoader would otherwise pass the (index, seed) keys to a wrapped __getitems__).
    __getitems__ = None

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int] | int) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        # Attributes of the wrapped data set (class_names, ...) stay reachable.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class ResumableLoader(DataLoader):
    """A train ``DataLoader`` whose position in the epoch is saved in checkpoints.

    ``state_dict()`` is ``{"epoch", "batches"}``: the sampler's epoch and the batches handed out in
    it. Lightning saves it with the fit loop in every checkpoint and calls ``load_state_dict`` when
    a run resumes mid-epoch; the next pass over the loader then skips those batches (in the
    sampler, without loading them) if it is the same epoch. Lightning does not prefetch from a
    loader with a length, so "handed out" is "trained on" when a checkpoint is written. The
    iterator starts lazily, at its first batch, after Lightning has called ``set_epoch``.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0,
                 sample_seeds: bool = False, **kwargs: Any) -> None:
        sampler = ResumableSampler(dataset, seed=seed, shuffle=True, sample_seeds=sample_seeds)
        super().__init__(SeededSamples(dataset) if sample_seeds else dataset, batch_size=batch_size,
                         sampler=sampler, num_workers=num_workers, drop_last=True,
                         persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed), **kwargs)
        self._position = {"epoch": 0, "batches": 0}
        self._pending: dict[str, int] | None = None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        pending, self._pending = self._pending, None
        done = 0
        if pending is not None and pending["epoch"] == sampler.epoch and 0 < pending["batches"] < len(self):
            done = pending["batches"]
            sampler.skip = done * self.batch_size  # type: ignore[operator]
        self._position = {"epoch": sampler.epoch, "batches": done}
        for batch in super().__iter__():
            self._position["batches"] += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return dict(self._position)

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._pending = {"epoch": int(state_dict["epoch"]), "batches": int(state_dict["batches"])}
