"""RunLogger: the callback that carries a fit's logged metrics into its run in the store."""

from __future__ import annotations

import math
import time

from ember.track import Run
from ember.train import checkpoint as ckpt
from ember.train.state import TrainState


class RunLogger:
    """Buffers logged metrics into the run and commits them about once a second; keeps the run's
    heartbeat while fit runs.

    A commit (one transaction) happens at a log, validation or epoch end that comes ``every_s``
    seconds or more after the previous commit or after the previous of these events, and at the
    end of fit. So a killed run loses at most the last second of its per-step metrics (or, when
    logs are further apart than that, none), while fast steps do not pay a transaction per log.
    With a ``writer`` the commit runs on its background thread, in order with the checkpoints.
    """

    def __init__(
        self, run: Run, writer: ckpt.BackgroundWriter | None = None, *, every_s: float = 1.0
    ) -> None:
        self.run = run
        self.writer = writer
        self.every_s = every_s
        self.last = self.event = time.perf_counter()

    def on_fit_start(self, state: TrainState) -> None:
        self.run.start_heartbeat()  # `running` again on a resume; pid and heartbeat tell a crash

    def on_log(self, state: TrainState, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=state.step, epoch=state.epoch)
        self._maybe_commit()

    def on_validation_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        self.run.log(
            {k: v for k, v in metrics.items() if not math.isnan(v)}, step=state.step, epoch=state.epoch
        )
        self._maybe_commit()

    def on_epoch_end(self, state: TrainState) -> None:
        self._maybe_commit()

    def _maybe_commit(self) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every_s or now - self.event >= self.every_s:
            self.commit()
        self.event = now

    def on_fit_end(self, state: TrainState) -> None:
        self.commit()

    def commit(self) -> None:
        self.last = time.perf_counter()
        if self.writer is None:
            self.run.flush()
        else:
            self.writer.submit(self.run.write, self.run.take())
