"""Each process of a data-parallel job takes its shard of every global batch.

A job of ``world_size`` processes trains on the same global batches as one process would:
every rank builds the same seeded order (`ember.data.loader`), cuts the same global batch, and
keeps the items ``rank, rank + world_size, ...`` of it (``batch[rank::world_size]``, as torch's
``DistributedSampler`` strides). Resuming needs no state: a global batch is found by its number,
on every rank alike.

A rank's mean loss covers its shard only; averaging the ranks' gradients (DDP, FSDP) then gives
each shard the same weight. Shards of a global batch that does not split evenly (the last,
ragged batch of an epoch) hold different numbers of items, so `shard_weight` says how much to
scale a rank's loss for the average to be the global batch's mean. A global batch smaller than
the number of ranks would leave a rank with nothing to train on; it is left out (every rank
leaves out the same one).

`ShardedBatches` shards any batch sampler (lists or tensors of indices, like ember's text and
pair loaders give); `shard_loader` rebuilds a torch ``DataLoader`` around it.

Example:
    >>> list(ShardedBatches([[0, 1, 2, 3, 4], [5, 6, 7]], rank=1, world_size=2))
    [[1, 3], [6]]
    >>> shard_weight(3, rank=0, world_size=2)  # 2 of 3 items: weight 2 * 2 / 3
    1.3333333333333333
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from typing import Any

from torch.utils.data import BatchSampler, DataLoader, Sampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

__all__ = ["ShardedBatches", "ShardedLoader", "shard_loader", "shard_weight"]


def shard_weight(size: int, *, rank: int, world_size: int) -> float:
    """The factor on a rank's mean loss over its shard of a ``size``-item global batch that makes the
    ranks' averaged gradient that of the global batch's mean loss: ``n_rank * world_size / size``."""
    share = len(range(rank, size, world_size))
    return share * world_size / size


class ShardedBatches(Sampler[Any]):
    """The shard ``batch[rank::world_size]`` of every batch of ``batches`` (global batches smaller
    than ``world_size`` are skipped). ``set_epoch`` is passed on to ``batches``."""

    def __init__(self, batches: Iterable[Any], *, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}); got {rank}")
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.batches.set_epoch(epoch, start_batch)  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches:
            if len(batch) >= self.world_size:
                yield batch[self.rank :: self.world_size]


class ShardedLoader(DataLoader):
    """A copy of ``loader`` (same dataset, collation, workers) that yields this rank's shards."""

    def __init__(self, loader: DataLoader, *, rank: int, world_size: int) -> None:
        workers = loader.num_workers
        super().__init__(
            loader.dataset,
            batch_sampler=ShardedBatches(loader.batch_sampler, rank=rank, world_size=world_size),  # type: ignore[arg-type]
            collate_fn=loader.collate_fn,
            num_workers=workers,
            pin_memory=loader.pin_memory,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context if workers else None,
            generator=loader.generator,
            prefetch_factor=loader.prefetch_factor if workers else None,
            persistent_workers=loader.persistent_workers,
        )
        self.unsharded = loader

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next pass epoch ``epoch`` from global batch ``start_batch`` (to resume)."""
        set_epoch = getattr(self.unsharded, "set_epoch", None)
        if set_epoch is not None:  # ember's loaders keep their position on the loader
            set_epoch(epoch, start_batch)
        else:
            self.batch_sampler.set_epoch(epoch, start_batch)  # type: ignore[union-attr]


def shard_loader(loader: DataLoader, *, rank: int, world_size: int) -> DataLoader:
    """``loader`` as rank ``rank`` of ``world_size`` sees it.

    A loader whose batches come from a seeded batch sampler (``set_epoch(epoch, start_batch)``:
    ember's loaders) or in stored order is sharded batch by batch; one with a
    ``DistributedSampler`` is already a rank's and is returned as is.

    Raises:
        ValueError: a loader that shuffles with an unseeded sampler (each rank would draw another
            order, and the shards would overlap); pass the dataset itself, or a DistributedSampler.
    """
    if isinstance(loader.sampler, DistributedSampler) or world_size == 1:
        return loader
    sampler = loader.batch_sampler
    ordered = isinstance(sampler, BatchSampler) and isinstance(sampler.sampler, SequentialSampler)
    if not (ordered or (isinstance(sampler, Sized) and hasattr(sampler, "set_epoch"))):
        raise ValueError(
            f"a DataLoader with {type(loader.sampler).__name__} cannot be split across {world_size} "
            "processes: each would draw its own order. Pass the Dataset itself (ember shards its seeded "
            "order) or give the DataLoader a torch.utils.data.DistributedSampler"
        )
    return ShardedLoader(loader, rank=rank, world_size=world_size)
