"""``ember list``: what the zoo registries hold, one name a line with what it is."""

from __future__ import annotations

import argparse

from ember._registry import Registry


def _registry(kind: str) -> Registry:
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


KINDS = ["models", "datasets", "optimizers", "schedules", "tasks", "callbacks"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="list registered models, datasets, optimizers, schedules, tasks, callbacks",
        description="List the names a config may use.\n\nexamples:\n  ember list models\n  ember list schedules",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("kind", choices=KINDS, help="what to list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    registry = _registry(args.kind)
    names = registry.names()
    width = max(map(len, names), default=0)
    for name in names:
        print(f"{name:<{width}}  {registry.description(name)}".rstrip())
    return 0
