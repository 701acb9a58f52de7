"""Tasks: what is learned. A task owns the loss, the metrics and how a batch is stepped.

Example:
    >>> from ember import tasks
    >>> task = tasks.create("classification", label_smoothing=0.1)
    >>> task.headline, task.mode
    ('accuracy', 'max')
"""

from ember.tasks.base import Evaluation, Task, registry
from ember.tasks.classification import Classification
from ember.tasks.regression import Regression

create = registry.create
register_task = registry.register


def list_tasks() -> list[str]:
    """Names accepted by :func:`create` (and by ``task.name`` in a config)."""
    return registry.names()


__all__ = [
    "Classification",
    "Evaluation",
    "Regression",
    "Task",
    "create",
    "list_tasks",
    "register_task",
    "registry",
]
