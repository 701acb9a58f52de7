"""Batches with an order and augmentation that depend on (seed, epoch, batch) alone.

The order of epoch ``e`` is ``torch.randperm(N, generator=g)`` with ``g`` seeded from
``(seed, e)``; the transform of batch ``b`` gets a generator seeded from ``(seed, e, b)``. So a run
resumed at batch ``b`` of epoch ``e`` (``set_epoch(e, start_batch=b)``) sees exactly the batches,
augmentation included, that the uninterrupted run saw, and no generator state is ever saved.

`TensorLoader` is the fast path for `ArrayData`: batches are ``index_select`` s of tensors already
in memory (on the GPU when ``device`` is CUDA), with no worker processes, collation or per-item
Python calls. `make_loader` picks it, or a `SeededDataLoader` (a torch ``DataLoader`` following the
same rules) for any other ``Dataset``.

In a data-parallel job both take ``rank`` and ``world_size``: each rank keeps its shard of every
global batch of the same order (`ember.data.sharding`), and its transforms draw from a generator
of its own (seeded by (seed, epoch, batch, rank)), so ranks augment their items differently.

Example:
    >>> import torch
    >>> from ember.data import ArrayData
    >>> loader = TensorLoader(ArrayData(torch.rand(10, 2), torch.arange(10)), batch_size=4, shuffle=True)
    >>> [len(y) for _, y in loader]
    [4, 4, 2]
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from ember.data.bundle import ArrayData
from ember.data.sharding import ShardedBatches, shard_weight

__all__ = ["SeededDataLoader", "TensorLoader", "batch_generator", "epoch_permutation", "make_loader"]

Batch = tuple[torch.Tensor, torch.Tensor]
Transform = Callable[[torch.Tensor, torch.Tensor, torch.Generator], Batch]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, identical on every machine (Python's ``hash`` is salted)."""
    text = ",".join(str(int(part)) for part in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of epoch ``epoch``: ``randperm(n)`` from a generator seeded by (seed, epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, epoch)))


def batch_generator(seed: int, epoch: int, batch: int, rank: int = 0) -> torch.Generator:
    """The CPU generator handed to the transform of batch ``batch`` of epoch ``epoch`` (on ``rank``
    of a data-parallel job; rank 0 draws what a single process draws)."""
    parts = (seed, epoch, batch) if rank == 0 else (seed, epoch, batch, rank)
    return torch.Generator().manual_seed(derive_seed(*parts))


def _num_batches(n: int, batch_size: int, drop_last: bool, world_size: int = 1) -> int:
    """Global batches of an epoch; a ragged last one smaller than ``world_size`` is left out."""
    if drop_last or 0 < n % batch_size < world_size:
        return n // batch_size
    return -(-n // batch_size)


def _weight(n: int, batch_size: int, batch: int, rank: int, world_size: int) -> float:
    size = min(batch_size, n - batch * batch_size)
    return shard_weight(size, rank=rank, world_size=world_size) if world_size > 1 else 1.0


class TensorLoader:
    """Iterate ``(x, y)`` batches of in-memory `ArrayData`, reproducibly, resumable mid-epoch.

    Each full pass advances to the next epoch by itself; `set_epoch` jumps anywhere.
    Unshuffled batches are views of the data: a transform must return new tensors, never write
    into its input (every transform in `ember.data.augment` complies).

    Args:
        data: the examples.
        batch_size: examples per batch; the last batch is smaller unless ``drop_last``.
        shuffle: a new order each epoch (see the module docstring); else the stored order.
        drop_last: skip a final incomplete batch.
        seed: the seed order and augmentation derive from.
        transform: ``transform(x, y, generator) -> (x, y)`` applied per batch.
        device: where batches live; a CUDA device gets the whole data set copied there once.
        rank, world_size: this process's shard of each global batch of ``batch_size`` items.

    Example:
        >>> import torch
        >>> data = ArrayData(torch.rand(8, 3), torch.arange(8))
        >>> loader = TensorLoader(data, batch_size=3, shuffle=True, seed=1)
        >>> loader.set_epoch(2, start_batch=1)
        >>> [len(y) for _, y in loader]
        [3, 2]
    """

    def __init__(
        self,
        data: ArrayData,
        *,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        transform: Transform | None = None,
        device: torch.device | str | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}); got {rank}")
        self.device = torch.device(device) if device is not None else data.x.device
        # one copy up front: per-batch host-to-device copies would dominate small models' steps
        self.x = data.x.to(self.device)
        self.y = data.y.to(self.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.transform = seed, transform
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0

    def __len__(self) -> int:
        """Batches in one whole epoch (whatever ``start_batch`` is)."""
        return _num_batches(len(self.y), self.batch_size, self.drop_last, self.world_size)

    def shard_weight(self, batch: int) -> float:
        """The factor on this rank's mean loss over batch ``batch`` (see `ember.data.sharding`)."""
        return _weight(len(self.y), self.batch_size, batch, self.rank, self.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next pass epoch ``epoch``, starting at batch ``start_batch`` (to resume)."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch must be in [0, {len(self)}]; got {start_batch}")
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[Batch]:
        epoch, start = self.epoch, self.start_batch
        self.start_batch = 0  # a resume offset applies to one pass only
        order = epoch_permutation(len(self.y), self.seed, epoch).to(self.device) if self.shuffle else None
        return self._batches(epoch, start, order)

    def _batches(self, epoch: int, start: int, order: torch.Tensor | None) -> Iterator[Batch]:
        n, size, data_x, data_y, transform = len(self.y), self.batch_size, self.x, self.y, self.transform
        rank, step = self.rank, self.world_size
        for batch in range(start, len(self)):
            low = batch * size
            high = low + size if low + size < n else n
            if order is None:
                x, y = data_x[low + rank : high : step], data_y[low + rank : high : step]  # views, no copy
            else:
                index = order[low + rank : high : step]
                x, y = data_x.index_select(0, index), data_y.index_select(0, index)
            if transform is not None:
                x, y = transform(x, y, batch_generator(self.seed, epoch, batch, rank))
            yield x, y
        self.epoch = epoch + 1


class _EpochBatches(Sampler[list[tuple[int, int, int]]]):
    """Batches of ``(index, epoch, batch)`` keys in `TensorLoader`'s order."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int) -> None:
        self.n, self.batch_size, self.shuffle, self.drop_last, self.seed = (
            n,
            batch_size,
            shuffle,
            drop_last,
            seed,
        )
        self.epoch, self.start_batch = 0, 0

    def __len__(self) -> int:
        return _num_batches(self.n, self.batch_size, self.drop_last)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch must be in [0, {len(self)}]; got {start_batch}")
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        epoch, start = self.epoch, self.start_batch
        self.start_batch = 0
        order = epoch_permutation(self.n, self.seed, epoch) if self.shuffle else torch.arange(self.n)
        for batch in range(start, len(self)):
            chunk = order[batch * self.batch_size : (batch + 1) * self.batch_size].tolist()
            yield [(index, epoch, batch) for index in chunk]
        self.epoch = epoch + 1


class _Tagged(Dataset):
    """Passes the (epoch, batch) tag of a key through to collation."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[Any, int, int]:
        index, epoch, batch = key
        return self.dataset[index], epoch, batch


class _Collate:
    """Collate items with torch's default, then apply the batch transform with its own generator."""

    def __init__(self, transform: Transform | None, seed: int, rank: int = 0) -> None:
        self.transform, self.seed, self.rank = transform, seed, rank

    def __call__(self, tagged: list[tuple[Any, int, int]]) -> Any:
        batch = default_collate([item for item, _, _ in tagged])
        if self.transform is None:
            return batch
        _, epoch, number = tagged[0]
        x, y = batch
        return self.transform(x, y, batch_generator(self.seed, epoch, number, self.rank))


class SeededDataLoader(DataLoader):
    """A torch ``DataLoader`` for any map-style dataset, with `TensorLoader`'s order, transform seeds,
    sharding (``rank``, ``world_size``) and ``set_epoch(epoch, start_batch)``; its ``dataset``
    attribute is a thin wrapper."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        transform: Transform | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        tiny_tail = 0 < n % batch_size < world_size  # a last batch some rank would get nothing of
        self.batches = _EpochBatches(n, batch_size, shuffle, drop_last or tiny_tail, seed)
        super().__init__(
            _Tagged(dataset),
            batch_sampler=ShardedBatches(self.batches, rank=rank, world_size=world_size)
            if world_size > 1
            else self.batches,
            collate_fn=_Collate(transform, seed, rank),
            num_workers=num_workers,
            pin_memory=pin_memory,
            generator=torch.Generator().manual_seed(seed),  # seeds the workers' own random state
        )
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next pass epoch ``epoch``, starting at batch ``start_batch``."""
        self.batches.set_epoch(epoch, start_batch)

    def shard_weight(self, batch: int) -> float:
        """The factor on this rank's mean loss over batch ``batch`` (see `ember.data.sharding`)."""
        return _weight(self.batches.n, self.batches.batch_size, batch, self.rank, self.world_size)


def make_loader(
    data: ArrayData | Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    transform: Transform | None = None,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> TensorLoader | DataLoader:
    """The fastest loader for ``data``: `TensorLoader` for `ArrayData`, else a `SeededDataLoader`.

    Both follow the same order and transform-seed rules and have ``set_epoch(epoch, start_batch)``.

    Args:
        data: `ArrayData` or any map-style ``Dataset`` whose items collate to ``(x, y)``.
        batch_size, shuffle, seed, transform, drop_last: as for `TensorLoader`.
        num_workers: worker processes for a generic dataset (ignored by the in-memory path).
        device: CUDA moves `ArrayData` there once; for a generic dataset it turns on pinned memory.
        rank, world_size: this process's shard of each global batch (a data-parallel job).

    Example:
        >>> import torch
        >>> loader = make_loader(ArrayData(torch.rand(6, 2), torch.arange(6)), batch_size=4, shuffle=False)
        >>> type(loader).__name__, len(loader)
        ('TensorLoader', 2)
    """
    if isinstance(data, ArrayData):
        return TensorLoader(
            data,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            seed=seed,
            transform=transform,
            device=device,
            rank=rank,
            world_size=world_size,
        )
    on_cuda = device is not None and torch.device(device).type == "cuda"
    return SeededDataLoader(
        data,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        seed=seed,
        transform=transform,
        num_workers=num_workers,
        pin_memory=on_cuda,
        rank=rank,
        world_size=world_size,
    )
