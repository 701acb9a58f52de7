"""``trainer.ema``: an exponential moving average of the weights, kept beside the model.

After every optimizer step each trainable parameter's average moves towards it:
``average <- d * average + (1 - d) * parameter`` with ``d = min(decay, (1 + n) / (10 + n))`` at
update ``n`` (the warm-up keeps a short run's average from being mostly the initial weights).
Frozen parameters and buffers (BatchNorm statistics) are the model's own when the average is used.

`EMA` is a callback: after each validation it evaluates the averaged weights on the same split
and adds their metrics as ``val/ema/<name>``. Its tensors go into every checkpoint (``ema/<name>``)
so a resumed run continues the same average, and the run saves the averaged model as
``ema.safetensors`` (the same keys as ``model.safetensors``). Under FSDP the averages are sharded
like the parameters (DTensors) and updated shard by shard.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Linear(2, 1)
    >>> ema = EMA(model, decay=0.5)
    >>> with torch.no_grad():
    ...     _ = model.weight.add_(1.0)
    >>> ema.update(updates=100)
    >>> torch.allclose(ema.averages()["weight"], model.weight - 0.5)
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from ember.config import ConfigError
from ember.train.state import TrainState

__all__ = ["EMA", "ema_decay"]


def ema_decay(decay: float, updates: int) -> float:
    """The decay at update ``updates`` (0-based): ``min(decay, (1 + n) / (10 + n))``."""
    return min(decay, (1 + updates) / (10 + updates))


class EMA:
    """The moving average of ``model``'s trainable parameters; a training callback.

    Args:
        model: the model being trained (unwrapped; under FSDP, the sharded module).
        decay: in (0, 1); 0.999 averages over roughly the last thousand steps.
        evaluate: ``evaluate(model) -> metrics`` run with the averaged weights after each
            validation (None: not evaluated).
    """

    def __init__(
        self,
        model: nn.Module,
        decay: float,
        evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    ) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"trainer.ema must be in (0, 1) (e.g. 0.999; 0 turns it off); got {decay}")
        self.decay = decay
        self.model = model
        self.evaluate = evaluate
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.names = [name for name, _ in named]
        self.params: list[torch.Tensor] = [p for _, p in named]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, *, updates: int) -> None:
        """Move the averages towards the current parameters (``updates`` made so far, for the warm-up)."""
        weight = 1.0 - ema_decay(self.decay, updates)
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], weight)

    def on_step_end(self, state: TrainState) -> None:
        self.update(updates=state.step - 1)

    def on_validation_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        """Evaluate the averaged weights; their metrics join the validation's (logged with them)."""
        if self.evaluate is None:
            return
        with self.applied():
            extra = {f"val/ema/{k}": v for k, v in self.evaluate(self.model).items()}
        metrics.update(extra)  # the dict every later callback (the run's logger) receives
        state.metrics.update(extra)
        if state.history:
            state.history[-1].update(extra)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own again after."""
        with torch.no_grad():
            kept = [p.detach().clone() for p in self.params]
            torch._foreach_copy_(self.params, self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, kept)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The averages by checkpoint key (``ema/<parameter name>``); the live tensors."""
        return {f"ema/{name}": t for name, t in zip(self.names, self.shadow)}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """Take the averages back from a checkpoint's tensors (keys as `tensors` gives them)."""
        missing = [key for key in self.tensors() if key not in tensors]
        if missing:
            raise ValueError(
                f"the checkpoint holds no moving average for {', '.join(missing[:3])}; "
                "it was written without trainer.ema"
            )
        with torch.no_grad():
            for key, t in self.tensors().items():
                t.copy_(tensors[key])

    def averages(self) -> dict[str, torch.Tensor]:
        """Parameter name → averaged tensor."""
        return dict(zip(self.names, self.shadow))
