"""Sharded loaders: each rank's shard of every global batch, weights that restore the global mean."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from ember.data import ArrayData, SeededDataLoader, TensorLoader
from ember.data.sharding import ShardedBatches, shard_loader, shard_weight
from ember.data.text import LMLoader, TokenChunks

N = 23


def data() -> ArrayData:
    return ArrayData(torch.arange(N, dtype=torch.float32)[:, None], torch.arange(N))


def shards(world: int, **kw: object) -> list[list[list[int]]]:
    """Labels of each rank's batches of epoch 1."""
    out = []
    for rank in range(world):
        loader = TensorLoader(data(), batch_size=6, shuffle=True, seed=3, rank=rank, world_size=world, **kw)  # type: ignore[arg-type]
        loader.set_epoch(1)
        out.append([y.tolist() for _, y in loader])
    return out


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_split_every_global_batch_of_the_single_process_order(world: int) -> None:
    (single,) = shards(1)
    ranks = shards(world)
    assert all(len(r) == len(single) for r in ranks)  # 23 = 3 * 6 + 5: the ragged batch splits too
    for b, batch in enumerate(single):
        assert sorted(sum((r[b] for r in ranks), [])) == sorted(batch)
        assert ranks[0][b] == batch[0::world]


def test_a_last_batch_smaller_than_the_world_is_left_out_on_every_rank() -> None:
    ranks = shards(6)  # the last global batch holds 5 items: one rank would get none
    assert [len(r) for r in ranks] == [3] * 6
    assert len(TensorLoader(data(), batch_size=6, rank=0, world_size=6)) == 3


def test_weights_make_the_ranks_average_the_global_mean() -> None:
    losses = torch.rand(N, dtype=torch.float64)
    for world in (2, 3, 4):
        loaders = [TensorLoader(data(), batch_size=6, rank=r, world_size=world) for r in range(world)]
        for b, parts in enumerate(zip(*loaders)):
            ranks = [losses[y].mean() * loaders[r].shard_weight(b) for r, (_, y) in enumerate(parts)]
            low = b * 6
            torch.testing.assert_close(sum(ranks) / world, losses[low : low + 6].mean())
    assert shard_weight(6, rank=1, world_size=2) == 1.0


def test_ranks_augment_differently_and_rank_0_as_one_process() -> None:
    seen: dict[int, list[int]] = {}

    def record(rank: int):  # type: ignore[no-untyped-def]
        def transform(x: torch.Tensor, y: torch.Tensor, g: torch.Generator):  # type: ignore[no-untyped-def]
            seen.setdefault(rank, []).append(int(torch.randint(1 << 30, (1,), generator=g)))
            return x, y

        return transform

    for rank, world in ((-1, 1), (0, 2), (1, 2)):
        loader = TensorLoader(
            data(), batch_size=6, transform=record(rank), rank=max(rank, 0), world_size=world
        )
        list(loader)
    assert seen[-1] == seen[0] != seen[1]


def test_seeded_dataloader_shards_like_the_in_memory_path() -> None:
    dataset = TensorDataset(data().x, data().y)
    for rank in range(2):
        fast = TensorLoader(data(), batch_size=6, shuffle=True, seed=5, rank=rank, world_size=2)
        generic = SeededDataLoader(dataset, batch_size=6, shuffle=True, seed=5, rank=rank, world_size=2)
        generic.set_epoch(0, start_batch=1)
        fast.set_epoch(0, start_batch=1)
        assert [y.tolist() for _, y in generic] == [y.tolist() for _, y in fast]
        assert generic.shard_weight(3) == fast.shard_weight(3)


def test_any_batch_sampler_and_text_windows() -> None:
    assert list(ShardedBatches([[0, 1, 2], [3]], rank=0, world_size=2)) == [[0, 2]]
    chunks = TokenChunks(torch.arange(400), chunk_size=100)

    def windows() -> LMLoader:  # each rank builds its own loader
        return LMLoader(chunks, batch_size=4, block_size=8, shuffle=True, seed=2)

    single = windows()
    ranks = [shard_loader(windows(), rank=r, world_size=2) for r in range(2)]
    for loader in (single, *ranks):
        loader.set_epoch(1, start_batch=2)  # type: ignore[attr-defined]
    for whole, *parts in zip(single, *ranks):
        assert torch.equal(torch.cat([p[0] for p in parts]).sort(0).values, whole[0].sort(0).values)


def test_loaders_that_cannot_be_split_say_what_to_do() -> None:
    dataset = TensorDataset(torch.arange(8.0))
    with pytest.raises(ValueError, match="DistributedSampler"):
        shard_loader(DataLoader(dataset, batch_size=2, shuffle=True), rank=0, world_size=2)
    own = DataLoader(dataset, batch_size=2, sampler=DistributedSampler(dataset, num_replicas=2, rank=1))
    assert shard_loader(own, rank=1, world_size=2) is own
    ordered = shard_loader(DataLoader(dataset, batch_size=4), rank=1, world_size=2)
    assert [b[0].tolist() for b in ordered] == [[1.0, 3.0], [5.0, 7.0]]
