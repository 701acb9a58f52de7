"""``trainer.compile``: the model compiled by torch.compile, with a clean fallback and its cost measured.

The model is compiled in place (``nn.Module.compile``), so its parameters, its state-dict keys and
its checkpoints are those of the eager model. Compiling happens lazily at the first step; if it
fails there (no C compiler, an op inductor cannot lower) training goes on in eager mode with one
warning, never a crash (``torch._dynamo.config.suppress_errors`` for the run's duration).
:class:`CompileTimer` measures what compiling cost: the first step's time minus the median of the
next steps'.

Example:
    >>> import torch
    >>> from torch import nn
    >>> with fallback_to_eager(True):
    ...     pass
"""

from __future__ import annotations

import contextlib
import statistics
import time
import warnings
from collections.abc import Iterator

from torch import nn

from ember.train.state import TrainState


def compile_model(model: nn.Module) -> None:
    """Compile ``model`` in place for training (its forward runs through torch.compile)."""
    model.compile()


@contextlib.contextmanager
def fallback_to_eager(enabled: bool) -> Iterator[None]:
    """While enabled, a frame torch.compile cannot compile runs eagerly (one warning) instead of raising."""
    if not enabled:
        yield
        return
    import torch._dynamo

    before = torch._dynamo.config.suppress_errors
    torch._dynamo.config.suppress_errors = True
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("once", module="torch._dynamo")
            yield
    finally:
        torch._dynamo.config.suppress_errors = before


class CompileTimer:
    """A callback: ``seconds`` = first step's time - median of the next ``window`` steps' (compile cost)."""

    def __init__(self, window: int = 5) -> None:
        self.window = window
        self.seconds: float | None = None
        self._last = 0.0
        self._first: float | None = None
        self._later: list[float] = []

    def on_fit_start(self, state: TrainState) -> None:
        self._last = time.perf_counter()

    def on_step_end(self, state: TrainState) -> None:
        now = time.perf_counter()
        took, self._last = now - self._last, now
        if self._first is None:
            self._first = took
        elif len(self._later) < self.window:
            self._later.append(took)
            if len(self._later) == self.window or state.step >= state.total_steps:
                self.seconds = max(0.0, self._first - statistics.median(self._later))

    def on_fit_end(self, state: TrainState) -> None:
        if self.seconds is None and self._first is not None:
            self.seconds = max(0.0, self._first - (statistics.median(self._later) if self._later else 0.0))


__all__ = ["CompileTimer", "compile_model", "fallback_to_eager"]
