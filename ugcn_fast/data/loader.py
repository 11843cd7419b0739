"""DataLoaders over epoch-dependent datasets such as `WindowDataset`, reproducible for a seed whatever the number
of worker processes.

A `WindowDataset` re-tiles its windows in `set_epoch`, and its length can change with the epoch. Persistent
worker processes keep the copy of the dataset they started with, so calling `set_epoch` in the main process
alone would not reach them; here every index the sampler hands out carries its epoch, and each process brings
its own copy to that epoch before fetching. Call `loader.set_epoch(epoch)` (or `loader.sampler.set_epoch`, as
with a DistributedSampler) before each epoch; the loader then drives the dataset's own `set_epoch`.
"""
from __future__ import annotations

import math
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from .._checks import is_int


class EpochKeyedDataset(Dataset):
    """Wraps a dataset so that it is fetched with (epoch, index) keys: the first key of a new epoch in a process
    calls the wrapped dataset's `set_epoch` (when it has one) in that process. Only the key and the item cross
    process boundaries; the wrapped dataset is shared with worker processes once, when they start."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._applied: tuple[int, int] | None = None   # (process id, epoch) the wrapped dataset was set to

    def apply_epoch(self, epoch: int, force: bool = False) -> None:
        """Brings the wrapped dataset of this process to `epoch` (again when `force`)."""
        state = (os.getpid(), epoch)
        if force or state != self._applied:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            self._applied = state

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        self.apply_epoch(epoch)
        return self.dataset[index]


class EpochSampler(Sampler):
    """(epoch, index) keys of one epoch: every index of the dataset once, in a permutation seeded by
    (seed + epoch) when `shuffle`, this replica's share when the data is split over `num_replicas` processes.

    The split follows torch's DistributedSampler (shuffle with the same generator, then pad by repeating the first
    indices, or with `drop_last` drop the tail, to a multiple of `num_replicas`, and take every
    `num_replicas`-th index from `rank`), but the length is taken at the start of every epoch, because a
    `WindowDataset` has a different number of windows from one epoch to the next.
    """

    def __init__(self, data: EpochKeyedDataset, shuffle: bool = True, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0, drop_last: bool = False):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")
        self.data, self.shuffle, self.seed = data, shuffle, seed
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch of the next iteration (its permutation and the dataset's tiling)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch = int(epoch)
        self.data.apply_epoch(self.epoch, force=True)

    def _indices(self) -> list[int]:
        # Forced: the dataset may have been set to another epoch directly since; the loader's epoch wins.
        self.data.apply_epoch(self.epoch, force=True)
        n = len(self.data)
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator).tolist()
        else:
            order = list(range(n))
        if self.drop_last:
            order = order[:n - n % self.num_replicas]
        elif n % self.num_replicas:
            padding = self.num_replicas - n % self.num_replicas
            order += (order * math.ceil(padding / max(n, 1)))[:padding]
        return order[self.rank::self.num_replicas]

    def __iter__(self):
        epoch = self.epoch
        return iter([(epoch, i) for i in self._indices()])

    def __len__(self) -> int:
        self.data.apply_epoch(self.epoch)
        n = len(self.data)
        if self.drop_last:
            return n // self.num_replicas
        return math.ceil(n / self.num_replicas)


class EpochLoader(DataLoader):
    """A DataLoader whose `set_epoch(epoch)` selects the next epoch's shuffle and the dataset's tiling, in the
    main process and in (persistent) workers alike. `dataset` is the EpochKeyedDataset wrapper; the original is
    `dataset.dataset`."""

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)


def seed_worker(worker_id: int) -> None:
    """worker_init_fn: seeds numpy's and Python's global generators from the worker's torch seed (which the
    loader's seeded generator fixes), so random augmentation in a worker is reproducible and differs between
    workers."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool = True, num_workers: int = 2, seed: int = 0,
                drop_last: bool = True, distributed: bool = False, num_replicas: int | None = None,
                rank: int | None = None, pin_memory: bool | None = None) -> EpochLoader:
    """A reproducible DataLoader over `dataset` (typically a WindowDataset).

    The batches depend only on `seed` and the epoch (`loader.set_epoch(epoch)` before each epoch; 0 at first),
    not on `num_workers`. Workers are persistent when num_workers > 0, take the dataset once when they start (by
    fork on Linux: numpy arrays are shared, not copied) and receive only (epoch, index) keys afterwards;
    `seed_worker` seeds numpy in each. With `distributed`, each process gets its share of every epoch as with a
    DistributedSampler (`num_replicas` and `rank` default to torch.distributed's world size and rank).
    `pin_memory` defaults to whether CUDA is available.
    """
    for name, value, least in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0), ("seed", seed, 0)):
        if not is_int(value) or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    for name, value in (("shuffle", shuffle), ("drop_last", drop_last), ("distributed", distributed)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise TypeError(f"dataset must be a map-style dataset (with __getitem__ and __len__), "
                        f"got {type(dataset).__name__}")
    if distributed:
        if num_replicas is None or rank is None:
            if not (dist.is_available() and dist.is_initialized()):
                raise ValueError("distributed=True needs torch.distributed initialised, or num_replicas and rank")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if not is_int(num_replicas) or num_replicas < 1:
            raise ValueError(f"num_replicas must be an int >= 1, got {num_replicas!r}")
        if not is_int(rank) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be an int in [0, num_replicas = {num_replicas}), got {rank!r}")
        num_replicas, rank = int(num_replicas), int(rank)
    elif num_replicas is not None or rank is not None:
        raise ValueError("num_replicas and rank are only used with distributed=True")
    keyed = EpochKeyedDataset(dataset)
    sampler = EpochSampler(keyed, shuffle=shuffle, seed=int(seed), num_replicas=num_replicas or 1, rank=rank or 0,
                           drop_last=drop_last and distributed)
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return EpochLoader(keyed, batch_size=int(batch_size), sampler=sampler, num_workers=int(num_workers),
                       drop_last=drop_last, persistent_workers=num_workers > 0, worker_init_fn=seed_worker,
                       generator=generator,
                       pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory)
