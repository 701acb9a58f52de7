"""Registry[T]: a name → builder table with "did you mean" errors.

This is the *zoo registry* (names of models, datasets, optimizers, schedules, tasks, callbacks).
It is unrelated to the *model registry* in ``ember.track.registry``, which stores trained models.

Example:
    >>> from ember._registry import Registry
    >>> shapes = Registry("shape")
    >>> @shapes.register("square")
    ... def square(side: float = 1.0) -> float:
    ...     return side * side
    >>> shapes.create("square", side=3.0)
    9.0
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class UnknownNameError(KeyError):
    """A name that no registry entry has. ``str()`` gives the whole sentence."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """A table from names to builder functions of one kind (``"model"``, ``"optimizer"`` ...)."""

    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or kind + "s"
        self._builders: dict[str, Callable[..., T]] = {}

    def register(self, name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator that adds a builder under ``name`` (default: the function's name)."""

        def add(builder: Callable[..., T]) -> Callable[..., T]:
            key = name or builder.__name__
            if key in self._builders and self._builders[key] is not builder:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._builders[key] = builder
            return builder

        return add

    def get(self, name: str) -> Callable[..., T]:
        """The builder registered under ``name``; an unknown name raises with a close match."""
        try:
            return self._builders[name]
        except KeyError:
            hint = did_you_mean(name, list(self._builders))
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'{hint} See `ember list {self.plural}`."
            ) from None

    def create(self, name: str, /, **kwargs: Any) -> T:
        """Build ``name`` with ``kwargs``; a keyword the builder lacks is an error naming it."""
        builder = self.get(name)
        check_kwargs(builder, kwargs, f"{self.kind} '{name}'")
        return builder(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._builders)

    def description(self, name: str) -> str:
        """The first line of ``name``'s builder docstring, reST markup and final period dropped ("" if none)."""
        doc = (inspect.getdoc(self.get(name)) or "").strip()
        line = doc.splitlines()[0].strip().rstrip(".") if doc else ""
        return re.sub(r":\w+:`~?([^`]+)`", r"\1", line).replace("``", "")

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._builders)


def accepted_kwargs(fn: Callable[..., Any]) -> set[str] | None:
    """Keyword names ``fn`` accepts, or None when it takes ``**kwargs`` (anything goes)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def check_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Raise TypeError naming the first keyword ``fn`` does not take, with a close match."""
    accepted = accepted_kwargs(fn)
    if accepted is None:
        return
    for key in kwargs:
        if key not in accepted:
            hint = did_you_mean(key, sorted(accepted))
            raise TypeError(f"{what} has no option '{key}'{hint} It takes: {', '.join(sorted(accepted))}.")
