"""CheckpointManager: when a fit writes its step checkpoints, which is best, which are pruned."""

from __future__ import annotations

import math
import time
from pathlib import Path

from ember.train import checkpoint as ckpt
from ember.train.state import TrainState


class CheckpointManager:
    """Writes step checkpoints, tracks the best by ``monitor``, prunes old ones.

    An epoch end less than ``min_interval`` seconds after the previous checkpoint is skipped unless
    its metric is a new best; ``step`` and ``final`` checkpoints are always written.

    Never deletes the best checkpoint nor the one the run resumed from. With a ``writer`` the state
    is copied now and written on the writer's thread; without one, written before returning.
    """

    def __init__(
        self,
        folder: Path,
        *,
        keep_last: int,
        monitor: str,
        mode: str,
        resumed_from: Path | None,
        writer: ckpt.BackgroundWriter | None = None,
        min_interval: float = 0.0,
    ) -> None:
        self.folder = folder
        self.min_interval = min_interval
        self.written = time.perf_counter()  # fit's start counts as the previous checkpoint
        self.keep_last = max(1, keep_last)
        self.monitor = monitor
        self.sign = 1.0 if mode == "max" else -1.0
        self.protect = {resumed_from} if resumed_from is not None else set()
        self.best_path: Path | None = None
        self.writer = writer

    def save(self, state: TrainState, *, reason: str) -> None:
        path = self.folder / f"step-{state.step:06d}.safetensors"
        value = state.metrics.get(self.monitor) if reason != "step" else None
        improved = False
        if value is not None and not math.isnan(value):
            if state.best is None or self.sign * (value - state.best) > 0:
                state.best, state.best_step, self.best_path = value, state.step, path
                improved = True
        elif state.best_step is not None and self.best_path is None:
            self.best_path = self.folder / f"step-{state.best_step:06d}.safetensors"
        now = time.perf_counter()
        if reason == "epoch" and not improved and now - self.written < self.min_interval:
            return  # a short epoch: the next epoch end (or the last) writes one
        self.written = now
        meta = {"position": state.position(), "reason": reason, "metrics": _finite(state.metrics)}
        # serialized now (the one copy; training goes on changing the tensors), written later
        data = ckpt.encode(model=state.model, optimizer=state.optimizer, scaler=state.scaler, meta=meta)
        protect = self.protect | ({self.best_path} if self.best_path else set())
        if self.writer is None:
            self._write(path, data, protect)
        else:
            self.writer.submit(self._write, path, data, protect)

    def _write(self, path: Path, data: bytes, protect: set[Path]) -> None:
        ckpt.atomic_write_bytes(path, data)
        ckpt.prune_checkpoints(self.folder, keep_last=self.keep_last, protect=protect)


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)}
