"""Training hooks: transforms a config section applies around the one loop.

A hook is built from the config by a builder registered under the section's name, by the package
that implements it (``privacy``: DP-SGD, registered by `ember.responsible.privacy`). The recipe
reaches it through this table, never by importing a later stage. A builder returns None when its
section is off.

A hook has two parts, both optional:

- ``hook.model(model) -> model``: a change of structure (DP-SGD: BatchNorm → GroupNorm), applied
  wherever the recipe builds the model; ``hook.structure`` names it (`ember.nn.structure`), and a
  run records the names in its spec, so ``spec.build()`` rebuilds the same layers;
- ``hook(model, optimizer, loader, *, total_steps) -> (model, optimizer, loader)``: applied by the
  Trainer after it built them and before the loop runs. A hook is also a callback (its ``on_*``
  methods are called like any callback's).
"""

from __future__ import annotations

from typing import Any

from ember._registry import Registry

hooks: Registry[Any] = Registry("training hook")


def active(cfg: Any) -> list[Any]:
    """The hooks of ``cfg`` whose sections are on, in name order."""
    built = (hooks.get(name)(cfg) for name in hooks.names())
    return [hook for hook in built if hook is not None]


def structure(cfg: Any) -> list[str]:
    """The structure transforms (`ember.nn.structure`) the active hooks apply to the model, by name:
    what a run records in its spec so that ``spec.build()`` rebuilds the same layers."""
    return [name for hook in active(cfg) for name in getattr(hook, "structure", ())]


def apply_model(cfg: Any, model: Any) -> Any:
    """``model`` after every active hook's structure change."""
    for hook in active(cfg):
        change = getattr(hook, "model", None)
        if change is not None:
            model = change(model)
    return model


__all__ = ["active", "apply_model", "hooks", "structure"]
