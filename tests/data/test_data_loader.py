"""TensorLoader / make_loader: coverage, per-epoch order, reproducibility, exact mid-epoch resume."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ember.data import ArrayData, Compose, Mixup, RandomCrop, SeededDataLoader, TensorLoader, make_loader

N = 23


def data() -> ArrayData:
    return ArrayData(torch.arange(N * 4, dtype=torch.float32).reshape(N, 1, 2, 2), torch.arange(N))


def epoch_labels(loader: TensorLoader | SeededDataLoader, epoch: int) -> list[int]:
    loader.set_epoch(epoch)
    return torch.cat([y for _, y in loader]).tolist()


def test_every_example_once_per_epoch_and_new_order_each_epoch() -> None:
    loader = TensorLoader(data(), batch_size=5, shuffle=True, seed=0)
    assert len(loader) == 5
    orders = [epoch_labels(loader, epoch) for epoch in range(3)]
    assert all(sorted(order) == list(range(N)) for order in orders)
    assert orders[0] != orders[1] != orders[2]


def test_reproducible_by_seed_and_auto_advancing() -> None:
    first = TensorLoader(data(), batch_size=5, shuffle=True, seed=4)
    again = TensorLoader(data(), batch_size=5, shuffle=True, seed=4)
    other = TensorLoader(data(), batch_size=5, shuffle=True, seed=5)
    assert epoch_labels(first, 2) == epoch_labels(again, 2) != epoch_labels(other, 2)
    fresh = TensorLoader(data(), batch_size=5, shuffle=True, seed=4)
    passes = [torch.cat([y for _, y in fresh]).tolist() for _ in range(2)]  # no set_epoch calls
    assert passes == [epoch_labels(first, 0), epoch_labels(first, 1)]


def test_x_follows_y() -> None:
    for x, y in TensorLoader(data(), batch_size=4, shuffle=True, seed=1):
        assert torch.equal(x[:, 0, 0, 0], y.float() * 4)


def test_resume_mid_epoch_repeats_the_same_augmented_batches() -> None:
    augment = Compose([RandomCrop(padding=1), Mixup(alpha=0.4, num_classes=N)])
    full = TensorLoader(data(), batch_size=4, shuffle=True, seed=9, transform=augment)
    full.set_epoch(3)
    everything = list(full)
    resumed = TensorLoader(data(), batch_size=4, shuffle=True, seed=9, transform=augment)
    resumed.set_epoch(3, start_batch=2)
    tail = list(resumed)
    assert len(tail) == len(everything) - 2
    for (x, y), (x_again, y_again) in zip(everything[2:], tail, strict=True):
        assert torch.equal(x, x_again) and torch.equal(y, y_again)
    assert resumed.epoch == 4 and len(list(resumed)) == len(everything)  # the offset applied once


def test_drop_last_and_unshuffled_order() -> None:
    loader = TensorLoader(data(), batch_size=5, drop_last=True)
    sizes = [len(y) for _, y in loader]
    assert len(loader) == 4 and sizes == [5, 5, 5, 5]
    assert torch.cat([y for _, y in loader]).tolist() == list(range(20))


def test_transform_never_changes_the_data() -> None:
    source = data()
    before = source.x.clone()
    for _ in TensorLoader(source, batch_size=8, transform=Compose([RandomCrop(1), Mixup(1.0, N)])):
        pass
    assert torch.equal(source.x, before)


class Items(Dataset):
    """A generic (non-ArrayData) dataset holding the same examples."""

    def __init__(self) -> None:
        self.data = data()

    def __len__(self) -> int:
        return N

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data.x[index], self.data.y[index]


def test_make_loader_paths_agree() -> None:
    augment = RandomCrop(padding=1)
    fast = make_loader(data(), batch_size=4, shuffle=True, seed=2, transform=augment)
    generic = make_loader(Items(), batch_size=4, shuffle=True, seed=2, transform=augment)
    assert isinstance(fast, TensorLoader) and isinstance(generic, SeededDataLoader)
    assert len(fast) == len(generic) == 6
    fast.set_epoch(1, start_batch=3)
    generic.set_epoch(1, start_batch=3)
    for (x, y), (x_generic, y_generic) in zip(fast, generic, strict=True):
        assert torch.equal(x, x_generic) and torch.equal(y, y_generic)
