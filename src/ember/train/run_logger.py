"""RunLogger: the callback that carries a fit's logged metrics into its run in the store."""

from __future__ import annotations

import math
import time

from ember.track import Run
from ember.train import checkpoint as ckpt
from ember.train.state import TrainState


class RunLogger:
    """Buffers logged metrics into the run; commits them at epoch ends (one transaction each).

    Commits are at least ``every_s`` seconds apart (short epochs would otherwise pay a database
    transaction each) and always at the end of fit. With a ``writer`` the commit runs on its
    background thread, in order with the checkpoints.
    """

    def __init__(
        self, run: Run, writer: ckpt.BackgroundWriter | None = None, *, every_s: float = 1.0
    ) -> None:
        self.run = run
        self.writer = writer
        self.every_s = every_s
        self.last = time.perf_counter()

    def on_log(self, state: TrainState, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=state.step, epoch=state.epoch)

    def on_validation_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        self.run.log(
            {k: v for k, v in metrics.items() if not math.isnan(v)}, step=state.step, epoch=state.epoch
        )

    def on_epoch_end(self, state: TrainState) -> None:
        if time.perf_counter() - self.last >= self.every_s:
            self.commit()

    def on_fit_end(self, state: TrainState) -> None:
        self.commit()

    def commit(self) -> None:
        self.last = time.perf_counter()
        if self.writer is None:
            self.run.flush()
        else:
            self.writer.submit(self.run.write, self.run.take())
