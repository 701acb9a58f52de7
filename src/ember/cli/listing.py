"""``ember list``: what the zoo registries hold."""

from __future__ import annotations

import argparse
from typing import Any


def _names(kind: str) -> list[str]:
    if kind == "models":
        from ember import models

        return models.list_models()
    if kind == "datasets":
        from ember import data

        return data.list_datasets()
    if kind == "tasks":
        from ember import tasks

        return tasks.list_tasks()
    from ember.train import callbacks, optim

    table: dict[str, Any] = {
        "optimizers": optim.optimizers,
        "schedules": optim.schedules,
        "callbacks": callbacks.callbacks,
    }
    return table[kind].names()


KINDS = ["models", "datasets", "optimizers", "schedules", "tasks", "callbacks"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "list",
        help="list registered models, datasets, optimizers, schedules, tasks, callbacks",
        description="List the names a config may use.\n\nexamples:\n  ember list models\n  ember list schedules",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("kind", choices=KINDS, help="what to list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for name in _names(args.kind):
        print(name)
    return 0
