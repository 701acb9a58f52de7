"""RunLogger: the callback that carries a fit's logged metrics into its run in the store, and
CommitFirst: the checkpointer wrapper that commits those metrics before every checkpoint."""

from __future__ import annotations

import math
import time

from ember.track import Run
from ember.train import checkpoint as ckpt
from ember.train.loop import Checkpointer
from ember.train.state import TrainState


class RunLogger:
    """Buffers logged metrics into the run and commits them about once a second; keeps the run's
    heartbeat while fit runs.

    A commit (one transaction) happens at a log, validation or epoch end that comes ``every_s``
    seconds or more after the previous commit or after the previous of these events, before every
    checkpoint (through :class:`CommitFirst`), and at the end of fit. So a killed run loses at most
    the last second of its per-step metrics (or, when logs are further apart than that, none), and
    never one logged at or before the checkpoint it resumes from, while fast steps do not pay a
    transaction per log. With a ``writer`` the commit runs on its background thread, in order with
    the checkpoints.
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


class CommitFirst:
    """A fit's checkpointer that commits the run's buffered metrics before each checkpoint.

    A fit resumed from the checkpoint of step N logs again from step N + 1, so a metric logged at or
    before N that was still in memory when the job was killed would leave a gap in the run for good.
    Committing first closes it. ``ordered``: ``inner`` writes through the logger's writer, whose jobs
    run in order, so the commit lands before the checkpoint without waiting; otherwise (FSDP's
    shards, written on the training thread) the commit is waited for.
    """

    def __init__(self, inner: Checkpointer, logger: RunLogger, *, ordered: bool) -> None:
        self.inner, self.logger, self.ordered = inner, logger, ordered

    def save(self, state: TrainState, *, reason: str) -> None:
        self.logger.commit()
        if not self.ordered and self.logger.writer is not None:
            self.logger.writer.wait()
        self.inner.save(state, reason=reason)
