"""Structure transforms: named, registered functions that change a model's layers in place.

A transform a run applied to its model after building it (DP-SGD's BatchNorm → GroupNorm) is
recorded by name in the run's :class:`~ember.tasks.spec.ModelSpec` (``transforms``), and
``spec.build()`` applies it again, so the run's weights load into the rebuilt model anywhere.

Example:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8))
    >>> apply(model, ["batchnorm_to_groupnorm"])
    ['1']
    >>> type(model[1]).__name__, model[1].num_groups
    ('GroupNorm', 8)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ember._registry import Registry

transforms: Registry[list[str]] = Registry("structure transform")
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _groups(channels: int, most: int = 32) -> int:
    return max(g for g in range(1, min(most, channels) + 1) if channels % g == 0)


@transforms.register("batchnorm_to_groupnorm")
def batchnorm_to_groupnorm(model: nn.Module) -> list[str]:
    """Replace every BatchNorm in ``model`` by a GroupNorm over the same channels, in place.

    The GroupNorm takes over the BatchNorm's weight and bias Parameters (an optimizer built on them
    stays valid); its groups are the largest divisor of the channels up to 32. Returns the names of
    the replaced layers.
    """
    replaced = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if not isinstance(child, _BATCHNORMS):
                continue
            norm = nn.GroupNorm(
                _groups(child.num_features), child.num_features, eps=child.eps, affine=child.affine
            )
            if child.affine:
                norm.weight, norm.bias = child.weight, child.bias
            norm.to(next((p.device for p in child.parameters()), torch.device("cpu")))
            setattr(module, child_name, norm)
            replaced.append(f"{name}.{child_name}" if name else child_name)
    return replaced


def apply(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Apply the structure transforms ``names`` to ``model`` in order; the layers each one changed."""
    changed: list[str] = []
    for name in names:
        fn: Callable[[nn.Module], list[str]] = transforms.get(name)
        changed += fn(model)
    return changed


__all__ = ["apply", "batchnorm_to_groupnorm", "transforms"]
