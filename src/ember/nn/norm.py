"""Normalization layers by name, for feature vectors (``dims=0``) and conv maps (``dims=1, 2``).

``make_norm("layer", C, dims=2)`` normalizes each pixel's C channels (a channels-last LayerNorm,
as in ConvNeXt), not the whole (C, H, W) map; ``"group"`` is the choice for the latter.

Example:
    >>> import torch
    >>> from ember.nn import make_norm
    >>> make_norm("layer", 16, dims=2)(torch.randn(2, 16, 8, 8)).shape
    torch.Size([2, 16, 8, 8])
"""

from __future__ import annotations

import torch
from torch import nn

from ember._registry import Registry


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension: ``x / rms(x) * weight`` (no mean, no bias).

    Args:
        dim: size of the last dimension.
        eps: added to the mean square before the square root.

    Example:
        >>> RMSNorm(8)(torch.randn(2, 3, 8)).shape
        torch.Size([2, 3, 8])
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., D) -> (..., D); statistics in float32 so bf16/fp16 inputs stay stable
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class ChannelsLast(nn.Module):
    """Applies a last-dimension layer (LayerNorm, RMSNorm) to the channels of a (B, C, *) map."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, *S) -> (B, *S, C) -> inner -> (B, C, *S)
        return self.inner(x.movedim(1, -1)).movedim(-1, 1)


def default_groups(num_features: int, max_groups: int = 32) -> int:
    """Largest divisor of ``num_features`` up to ``max_groups`` that leaves >= 2 channels a group."""
    for groups in range(min(max_groups, num_features // 2), 1, -1):
        if num_features % groups == 0:
            return groups
    return 1


norms: Registry[nn.Module] = Registry("norm")
_BATCH = {0: nn.BatchNorm1d, 1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


@norms.register("batch")
def _batch(num_features: int, dims: int) -> nn.Module:
    return _BATCH[dims](num_features)


@norms.register("layer")
def _layer(num_features: int, dims: int) -> nn.Module:
    layer = nn.LayerNorm(num_features)
    return layer if dims == 0 else ChannelsLast(layer)


@norms.register("rms")
def _rms(num_features: int, dims: int) -> nn.Module:
    layer = RMSNorm(num_features)
    return layer if dims == 0 else ChannelsLast(layer)


@norms.register("group")
def _group(num_features: int, dims: int) -> nn.Module:
    return nn.GroupNorm(default_groups(num_features), num_features)


@norms.register("none")
def _none(num_features: int, dims: int) -> nn.Module:
    return nn.Identity()


def make_norm(name: str, num_features: int, *, dims: int = 2) -> nn.Module:
    """A normalization layer by name.

    Args:
        name: "batch", "layer", "rms", "group" or "none".
        num_features: channels C (or feature size for ``dims=0``).
        dims: spatial dimensions of the input: 0 for (B, C) or channels-last (B, ..., C) features
            ("batch" then needs (B, C)), 1 for (B, C, L), 2 for (B, C, H, W), 3 for (B, C, D, H, W).
            For dims >= 1, "layer" and "rms" normalize over C at each position (channels-last);
            "group" uses ``nn.GroupNorm`` with ``default_groups(C)`` groups.

    Returns:
        A module that keeps the input's shape.

    Raises:
        KeyError: unknown name (with a close match); ValueError: dims outside 0..3.

    Example:
        >>> make_norm("group", 16).num_groups
        8
    """
    if dims not in _BATCH:
        raise ValueError(f"dims must be 0, 1, 2 or 3 (spatial dimensions of the input), got {dims}")
    return norms.get(name)(num_features, dims)


def list_norms() -> list[str]:
    """The names ``make_norm`` accepts, sorted."""
    return norms.names()
