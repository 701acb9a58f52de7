"""The task contract the training loop relies on, and the task registry.

A task is any object with these members; ember's own tasks are plain classes, and a user's task
need not inherit anything:

- ``headline`` / ``mode``: the metric that picks the best checkpoint, and whether higher is better.
- ``forward(model, batch) -> (output, target)``: how one batch goes through the model.
- ``loss(output, target) -> Tensor``: a scalar to minimize.
- ``evaluation() -> Evaluation``: a fresh accumulator of outputs for validation and test metrics.

Optional, for tasks whose step is not one forward and one backward (see `ember.train.loop`):

- ``train_step(model, batch, optimizer, *, autocast) -> Tensor``: the whole optimizer step (or
  steps: a GAN's discriminator, then its generator); returns the loss to log.
- ``after_step(model)``: runs after each optimizer step (a moving average of the weights).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import torch
from torch import nn

from ember._registry import Registry


class Evaluation(Protocol):
    """Accumulates one pass of outputs, then computes metrics (floats) from them."""

    def update(self, output: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None: ...

    def compute(self) -> dict[str, float]: ...


class Task(Protocol):
    """What the loop needs from a task (see the module docstring)."""

    headline: str
    mode: Literal["max", "min"]

    def forward(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]: ...

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...

    def evaluation(self) -> Evaluation: ...


registry: Registry[Task] = Registry("task")


def split_batch(batch: Any) -> tuple[Any, torch.Tensor]:
    """(inputs, target) from a tuple/list batch or a dict with ``target`` / ``labels`` / ``y``."""
    if isinstance(batch, list | tuple):
        if len(batch) != 2:
            raise ValueError(
                f"expected batches of (inputs, target), got a {type(batch).__name__} of {len(batch)}"
            )
        return batch[0], batch[1]
    if isinstance(batch, dict):
        for key in ("target", "labels", "y"):
            if key in batch:
                inputs = {k: v for k, v in batch.items() if k != key}
                return inputs, batch[key]
    raise ValueError("expected batches of (inputs, target) or a dict with a 'target' key")


class LossMean:
    """Running, sync-free mean of per-batch losses weighted by batch size."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.count = 0

    def update(self, loss: torch.Tensor, n: int) -> None:
        value = loss.detach().float() * n
        self.total = value if self.total is None else self.total + value
        self.count += n

    def compute(self) -> float:
        return (
            float(self.total.item() / self.count) if self.total is not None and self.count else float("nan")
        )
