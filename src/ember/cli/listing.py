"""``ember list``: what the zoo registries hold, one line each: the name and what it is.

The description is the first line of the registered builder's docstring, so every registry
(models, datasets, tasks, optimizers, schedules, callbacks) lists the same way.
"""

from __future__ import annotations

import argparse
import inspect
import re
from typing import Any

KINDS = ["models", "datasets", "optimizers", "schedules", "tasks", "callbacks"]


def registry(kind: str) -> Any:
    """The zoo registry behind ``ember list KIND``."""
    if kind == "models":
        from ember import models

        return models.registry
    if kind == "datasets":
        from ember import data

        return data.registry
    if kind == "tasks":
        from ember import tasks

        return tasks.registry
    from ember.train import callbacks, optim

    return {"optimizers": optim.optimizers, "schedules": optim.schedules, "callbacks": callbacks.callbacks}[
        kind
    ]


def description(builder: Any) -> str:
    """The first line of ``builder``'s docstring ('' when it has none), reST markup dropped.

    Example:
        >>> def f():
        ...     \"\"\"Cross-entropy (see :class:`Classification`), ``top_k`` too.\"\"\"
        >>> description(f)
        'Cross-entropy (see Classification), top_k too.'
    """
    doc = (inspect.getdoc(builder) or "").strip()
    line = doc.splitlines()[0].strip() if doc else ""
    return re.sub(r":\w+:`~?([^`]+)`", r"\1", line).replace("``", "")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "list",
        help="list registered models, datasets, optimizers, schedules, tasks, callbacks",
        description="List the names a config may use, each with what it is.\n\n"
        "examples:\n  ember list models\n  ember list schedules",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("kind", choices=KINDS, help="what to list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    table = registry(args.kind)
    names = table.names()
    width = max((len(n) for n in names), default=0)
    for name in names:
        print(f"{name:{width}s}  {description(table.get(name))}".rstrip())
    return 0
