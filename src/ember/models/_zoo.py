"""The model zoo: names → builders (``create``, ``list_models``), made from families and variants.

A *family* is a config class (a frozen dataclass with a docstring per field) and the model built
from it: ``register_family(ResNetConfig, ResNet)``. A *variant* is a name for some overrides of
the config's defaults: ``register_variant("resnet18", ResNetConfig, "...", width=64)``. Its
builder takes every field of the config as a keyword option, defaulting to the variant's value, so
``create`` and a recipe check a user's options against the config's fields ("did you mean").
Every vision family takes ``in_channels``, ``num_classes`` and ``image_size`` so a recipe can
fill them from the data. ``register_model`` still adds a hand-written builder for a model that
is not a config family.

Example:
    >>> from ember.models import create
    >>> model = create("resnet_tiny", in_channels=1, num_classes=10, image_size=8)
    >>> sum(p.numel() for p in model.parameters()) > 0
    True
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Collection
from typing import Any

from torch import nn

from ember._registry import Registry, check_kwargs

registry: Registry[nn.Module] = Registry("model")
register_model = registry.register

_families: dict[type, tuple[Callable[[Any], nn.Module], frozenset[str]]] = {}


def register_family(config: type, model: Callable[[Any], nn.Module], *, unused: Collection[str] = ()) -> None:
    """Make ``model(config(...))`` the family whose variants `register_variant` names.

    Args:
        config: a frozen dataclass; each field is an option of every variant.
        model: builds the model from a ``config`` instance (the model class).
        unused: fields this family ignores (inherited from a shared config); not offered as options.
    """
    if not (dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen):  # type: ignore[attr-defined]
        raise TypeError(f"{config.__name__} must be a frozen dataclass to be a model family's config")
    names = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(unused) - names)
    if unknown:
        raise TypeError(f"{config.__name__} has no fields {unknown}")
    _families[config] = (model, frozenset(unused))


def register_variant(
    name: str, config: type, description: str, /, **overrides: Any
) -> Callable[..., nn.Module]:
    """Register ``name``: the family of ``config`` with ``overrides`` of its defaults.

    Args:
        name: the zoo name (``create(name)``, ``model.name`` in a config).
        config: a config class given to `register_family`.
        description: one line for ``ember list models``: what this variant is.
        **overrides: field values of this variant; every other field keeps the config's default.

    Returns:
        The builder: keyword-only options (the config's fields) → a new model.

    Example:
        >>> import inspect
        >>> builder = registry.get("resnet18")  # register_variant("resnet18", ResNetConfig, ..., width=64, ...)
        >>> inspect.signature(builder).parameters["width"].default
        64
        >>> create("resnet18", depths=[1, 1]).config.depths
        (1, 1)
    """
    if config not in _families:
        raise TypeError(f"register_family({config.__name__}, ...) must come before its variants")
    model, unused = _families[config]
    fields = [f for f in dataclasses.fields(config) if f.name not in unused]
    defaults = {f.name: _default(f) for f in fields}
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise TypeError(
            f"variant '{name}' overrides {unknown}, which {config.__name__} does not have as options"
        )
    defaults.update(overrides)

    def build(**options: Any) -> nn.Module:
        check_kwargs(build, options, f"model '{name}'")
        values = {**defaults, **options}
        for key, value in values.items():
            if isinstance(value, list) and isinstance(defaults[key], tuple):
                values[key] = tuple(value)  # YAML lists become the config's tuples
        return model(config(**values))

    build.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=defaults[f.name], annotation=f.type
            )
            for f in fields
        ],
        return_annotation=getattr(model, "__name__", "nn.Module"),
    )
    build.__name__ = build.__qualname__ = name
    build.__module__ = config.__module__
    set_here = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
    build.__doc__ = f"{description}.\n\nOptions: the fields of ``{config.__name__}``" + (
        f"; this variant sets {set_here}." if set_here else " with their defaults."
    )
    registry.register(name)(build)
    return build


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"field '{f.name}' needs a default to be a model option")


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
