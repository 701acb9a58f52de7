"""Exponential moving average of a module's weights (Polyak averaging), as generative models keep.

``update_ema(average, model, decay)`` moves each parameter of ``average`` towards ``model``'s and
copies the buffers (BatchNorm statistics, spectral-norm vectors). ``ema_decay(decay, updates)``
warms the decay up (``(1 + n) / (10 + n)``, capped at ``decay``), so an average taken over a short
run is not dominated by the random initialization.

Example:
    >>> import copy, torch
    >>> from torch import nn
    >>> model = nn.Linear(2, 1)
    >>> average = copy.deepcopy(model).requires_grad_(False)
    >>> with torch.no_grad():
    ...     _ = model.weight.add_(1.0)
    >>> update_ema(average, model, 0.5)
    >>> torch.allclose(average.weight, model.weight - 0.5)
    True
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ema_decay", "update_ema"]


def ema_decay(decay: float, updates: int) -> float:
    """The decay to use at update number ``updates`` (0-based): ``min(decay, (1 + n) / (10 + n))``."""
    return min(decay, (1 + updates) / (10 + updates))


@torch.no_grad()
def update_ema(average: nn.Module, model: nn.Module, decay: float) -> None:
    """``average <- decay * average + (1 - decay) * model`` for parameters; buffers are copied.

    Args:
        average: a module of the same structure as ``model`` (its deep copy).
        model: the module being trained.
        decay: in [0, 1]; 0 copies ``model``.
    """
    averaged: list[torch.Tensor] = list(average.parameters())
    current: list[torch.Tensor] = list(model.parameters())
    if len(averaged) != len(current):
        raise ValueError(f"the average has {len(averaged)} parameters and the model {len(current)}")
    torch._foreach_lerp_(averaged, current, 1.0 - decay)
    for a, b in zip(average.buffers(), model.buffers()):
        a.copy_(b)
