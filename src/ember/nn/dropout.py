"""Stochastic depth (``DropPath``): drop a whole residual branch per sample while training.

Plain dropout is ``torch.nn.Dropout``; this file only adds what torch lacks.

Example:
    >>> import torch
    >>> from ember.nn import DropPath
    >>> DropPath(0.1).eval()(torch.ones(2, 3)).sum().item()
    6.0
"""

from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    """Zeroes the whole input of each sample with probability ``p`` and scales survivors by 1/(1-p).

    Used on a residual branch (``x + drop_path(branch(x))``) so the block is skipped for that sample;
    the expectation is unchanged, and in eval mode it is the identity.

    Args:
        p: drop probability in [0, 1).

    Example:
        >>> DropPath(0.2)(torch.ones(4, 8)).shape
        torch.Size([4, 8])
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"DropPath p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, ...) -> (B, ...); one Bernoulli draw per sample, broadcast over the rest
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"
