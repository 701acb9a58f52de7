"""The model zoo: names → builder functions (``create``, ``list_models``, ``register_model``).

A builder is a plain function with keyword-only, typed options that returns an ``nn.Module``.
Every vision builder takes ``in_channels``, ``num_classes`` and ``image_size`` so a recipe can fill
them from the data; ``create`` rejects an option the builder lacks, naming it.

Example:
    >>> from ember.models import create
    >>> model = create("resnet_tiny", in_channels=1, num_classes=10, image_size=8)
    >>> sum(p.numel() for p in model.parameters()) > 0
    True
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ember._registry import Registry

registry: Registry[nn.Module] = Registry("model")
register_model = registry.register


def create(name: str, /, **kwargs: Any) -> nn.Module:
    """Build the zoo model ``name`` with builder options ``kwargs``.

    Args:
        name: a name from ``list_models()``.
        **kwargs: the builder's keyword options (``in_channels``, ``num_classes``, ``width`` ...).

    Returns:
        A freshly initialized ``nn.Module``.

    Raises:
        KeyError: unknown name (the message suggests the closest one).
        TypeError: an option the builder does not take (named, with a close match).

    Example:
        >>> create("cnn_tiny", in_channels=1, image_size=8).__class__.__name__
        'CNN'
    """
    model = registry.create(name, **kwargs)
    # a run records how its model was built (its ModelSpec) from this: rebuilt without pickle later
    object.__setattr__(model, "_ember_origin", (name, dict(kwargs)))
    return model


def list_models() -> list[str]:
    """All registered model names, sorted."""
    return registry.names()
