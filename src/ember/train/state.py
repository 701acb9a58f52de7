"""TrainState: all mutable state of one training run in one place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ember.train.precision import Precision


@dataclass
class TrainState:
    """Everything the loop changes, so callbacks and checkpoints see one object.

    ``batch_in_epoch`` counts micro-batches consumed in the current epoch (the data position a
    mid-epoch resume starts from); ``step`` counts optimizer steps.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    precision: Precision
    device: torch.device
    epochs: int
    total_steps: int
    steps_per_epoch: int
    schedule: Callable[[int], float] | None = None
    scaler: torch.amp.GradScaler | None = None
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    samples_seen: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    best: float | None = None
    best_step: int | None = None
    should_stop: bool = False
    stop_reason: str = ""
    flops_per_sample: float | None = None
    """Training FLOPs of one sample (forward + backward), for MFU (`ember.train.flops`)."""
    peak_flops: float | None = None
    """The device's measured matmul FLOP/s in the run's compute dtype, for MFU."""
    ema: Any = None
    """The moving average of the weights (`ember.train.ema.EMA`, ``trainer.ema``), checkpointed with them."""
    interrupted: str = ""
    """The signal that stopped the fit (``SIGTERM``), or empty."""

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def position(self) -> dict[str, int | float | None | str]:
        """The JSON-able loop position stored in checkpoints."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "samples_seen": self.samples_seen,
            "best": self.best,
            "best_step": self.best_step,
        }

    def load_position(self, pos: dict[str, int]) -> None:
        self.step = int(pos["step"])
        self.epoch = int(pos["epoch"])
        self.batch_in_epoch = int(pos["batch_in_epoch"])
        self.samples_seen = int(pos.get("samples_seen", 0))
        self.best = pos.get("best")
        self.best_step = pos.get("best_step")
