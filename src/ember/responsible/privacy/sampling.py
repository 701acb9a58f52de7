"""Poisson sampling: the batches DP-SGD's accountants assume.

Each example joins each batch independently with probability q (the sample rate), so batch sizes
vary around q N. Batches depend on (seed, epoch, batch) alone, like `ember.data.TensorLoader`'s,
so a resumed run draws the same ones.

A draw that comes out empty is drawn again (its probability, (1 - q)^N, is e^-2048 for the
Fashion-MNIST recipe); :attr:`PoissonLoader.empty_bound` is that probability over all steps, which
adds to δ at most.

Example:
    >>> import torch
    >>> from ember.data import ArrayData
    >>> loader = PoissonLoader(torch.rand(1000, 2), torch.arange(1000), sample_rate=0.1, seed=0)
    >>> len(loader), 60 < len(next(iter(loader))[1]) < 140
    (10, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from ember.data.loader import Transform, batch_generator, derive_seed


class PoissonLoader:
    """Batches of in-memory ``(x, y)`` drawn by Poisson sampling, ``round(1 / q)`` of them an epoch.

    Args:
        x, y: the examples (already on the training device).
        sample_rate: q, each example's probability of being in a batch.
        seed: draws depend on (seed, epoch, batch).
        transform: augmentation ``transform(x, y, generator)``, as for `TensorLoader`.
        batches_per_epoch: default ``ceil(1 / q)``, the batches of a plain loader with batch size q N.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        sample_rate: float,
        seed: int = 0,
        transform: Transform | None = None,
        batches_per_epoch: int | None = None,
    ) -> None:
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.x, self.y, self.sample_rate, self.seed, self.transform = x, y, sample_rate, seed, transform
        self.batches = batches_per_epoch or math.ceil(1 / sample_rate)
        self.device = x.device
        self.epoch, self.start_batch = 0, 0

    def __len__(self) -> int:
        return self.batches

    @property
    def expected_batch_size(self) -> float:
        return self.sample_rate * len(self.y)

    def empty_bound(self, steps: int) -> float:
        """Probability that any of ``steps`` draws came out empty (and was drawn again)."""
        return min(1.0, steps * (1 - self.sample_rate) ** len(self.y))

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch must be in [0, {len(self)}]; got {start_batch}")
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, start = self.epoch, self.start_batch
        self.start_batch = 0
        for batch in range(start, self.batches):
            yield self.draw(epoch, batch)
        self.epoch = epoch + 1

    def draw(self, epoch: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``batch`` of epoch ``epoch``."""
        n = len(self.y)
        for attempt in range(1000):
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, batch, attempt, 0x5A))
            index = (torch.rand(n, generator=g) < self.sample_rate).nonzero().squeeze(1)
            if len(index):
                break
        index = index.to(self.device)
        x, y = self.x.index_select(0, index), self.y.index_select(0, index)
        if self.transform is not None:
            x, y = self.transform(x, y, batch_generator(self.seed, epoch, batch))
        return x, y


def poisson_like(loader: Any, *, seed: int) -> PoissonLoader:
    """A `PoissonLoader` over the data of an ember `TensorLoader`, with q = its batch size / N."""
    from ember.data.loader import TensorLoader

    if not isinstance(loader, TensorLoader):
        raise ValueError(
            f"DP-SGD draws Poisson batches from in-memory data (ArrayData); got a {type(loader).__name__}. "
            "Image and table data sets load as ArrayData; for others, pass (X, y) tensors."
        )
    n = len(loader.y)
    return PoissonLoader(
        loader.x,
        loader.y,
        sample_rate=min(1.0, loader.batch_size / n),
        seed=seed,
        transform=loader.transform,
        batches_per_epoch=len(loader),
    )


__all__ = ["PoissonLoader", "poisson_like"]
