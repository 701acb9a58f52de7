"""CheckpointManager: when a fit writes its step checkpoints, which is best, which are pruned.

What it promises, through any sequence of kills and resumes:

- only finite states are written: a NaN or Inf anywhere in the model's parameters, buffers (a
  BatchNorm's ``running_var``) or optimizer moments stops training instead, so every checkpoint
  kept is one to resume from;
- the best checkpoint (``best_step`` in every checkpoint's position) and the one the run resumed
  from are never pruned, in this fit or a resumed one;
- temporary files of writes a kill interrupted are deleted when the run starts again.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from ember._io import remove_orphans
from ember.train import checkpoint as ckpt
from ember.train.loop import NonFiniteLossError
from ember.train.state import TrainState


class NonFiniteStateError(NonFiniteLossError):
    """The model's state (parameters, buffers or optimizer moments) holds a NaN or Inf."""


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
        for where in (folder, folder.parent):  # writes a kill interrupted (the run's files too)
            remove_orphans(where)
        self.min_interval = min_interval
        self.written = time.perf_counter()  # fit's start counts as the previous checkpoint
        self.keep_last = max(1, keep_last)
        self.monitor = monitor
        self.sign = 1.0 if mode == "max" else -1.0
        self.protect = {resumed_from} if resumed_from is not None else set()
        self.best_path: Path | None = None
        self.writer = writer

    def _path(self, step: int) -> Path:
        return self.folder / f"step-{step:06d}.safetensors"

    def save(self, state: TrainState, *, reason: str) -> None:
        path = self._path(state.step)
        if self.best_path is None and state.best_step is not None:  # resumed: the position names it
            self.best_path = self._path(state.best_step)
        value = state.metrics.get(self.monitor) if reason != "step" else None
        improved = value is not None and not math.isnan(value)
        improved = improved and (state.best is None or self.sign * (value - state.best) > 0)  # type: ignore[operator]
        now = time.perf_counter()
        if reason == "epoch" and not improved and now - self.written < self.min_interval:
            return  # a short epoch: the next epoch end (or the last) writes one
        self.written = now
        extra = state.ema.tensors() if state.ema is not None else None  # the weights' moving average
        tensors, info = ckpt.snapshot(
            model=state.model, optimizer=state.optimizer, scaler=state.scaler, extra=extra
        )
        bad = ckpt.nonfinite(tensors)
        if bad:
            state.should_stop, state.stop_reason = True, f"non-finite state at step {state.step}"
            names = ", ".join(k.removeprefix("model/") for k in bad[:4]) + (" ..." if len(bad) > 4 else "")
            raise NonFiniteStateError(
                f"the training state became non-finite by optimizer step {state.step} (NaN or Inf in "
                f"{names}); no checkpoint of it is written, and the last good one "
                "is kept. Try a lower lr, clip_grad_norm, or precision=fp32."
            )
        if improved:
            state.best, state.best_step, self.best_path = value, state.step, path
        info.update(position=state.position(), reason=reason, metrics=_finite(state.metrics))
        # serialized now (the one copy; training goes on changing the tensors); the digest and the
        # write happen on the writer's thread
        data = ckpt.serialize(tensors, metadata={"ember": json.dumps(info)})
        protect = self.protect | ({self.best_path} if self.best_path else set())
        if self.writer is None:
            self._write(path, data, protect)
        else:
            self.writer.submit(self._write, path, data, protect)

    def _write(self, path: Path, data: bytes, protect: set[Path]) -> None:
        ckpt.write_sealed(path, data)
        ckpt.prune_checkpoints(self.folder, keep_last=self.keep_last, protect=protect)


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)}
