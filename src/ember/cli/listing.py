"""``ember list``: what the zoo registries hold, one line each: the name and what it is.

The description is the first line of the registered builder's docstring (`Registry.description`),
so every registry lists the same way.
"""

from __future__ import annotations

import argparse

from ember._registry import Registry

KINDS = ["models", "datasets", "optimizers", "schedules", "tasks", "callbacks"]


def registry(kind: str) -> Registry:
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

    table: dict[str, Registry] = {
        "optimizers": optim.optimizers,
        "schedules": optim.schedules,
        "callbacks": callbacks.callbacks,
    }
    return table[kind]


def register(sub: argparse._SubParsersAction) -> None:
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
    width = max(map(len, names), default=0)
    for name in names:
        print(f"{name:<{width}}  {table.description(name)}".rstrip())
    return 0
