"""Activations by name: ``get_activation("gelu")`` returns a fresh ``nn.Module``.

Blocks take ``act: str`` and call this, so a config can switch activations without code.

Example:
    >>> from ember.nn import get_activation
    >>> get_activation("relu")
    ReLU()
"""

from __future__ import annotations

from torch import nn

from ember._registry import Registry

activations: Registry[nn.Module] = Registry("activation")


@activations.register("relu")
def relu() -> nn.Module:
    return nn.ReLU()


@activations.register("gelu")
def gelu() -> nn.Module:
    return nn.GELU()


@activations.register("sigmoid")
def sigmoid() -> nn.Module:
    return nn.Sigmoid()


@activations.register("tanh")
def tanh() -> nn.Module:
    return nn.Tanh()


@activations.register("silu")
def silu() -> nn.Module:
    return nn.SiLU()


@activations.register("identity")
def identity() -> nn.Module:
    return nn.Identity()


def get_activation(name: str) -> nn.Module:
    """A new activation module by name.

    Args:
        name: one of ``list_activations()`` ("relu", "gelu", "sigmoid", "tanh", "silu", "identity").

    Returns:
        A fresh module (elementwise, no parameters).

    Raises:
        KeyError: an unknown name; the message suggests the closest known one.

    Example:
        >>> get_activation("silu")
        SiLU()
    """
    return activations.create(name)


def list_activations() -> list[str]:
    """The names ``get_activation`` accepts, sorted."""
    return activations.names()
