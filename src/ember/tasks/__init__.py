"""Tasks: what is learned. A task owns the loss, the metrics and how a batch is stepped.

Example:
    >>> from ember import tasks
    >>> task = tasks.create("classification", label_smoothing=0.1)
    >>> task.headline, task.mode
    ('accuracy', 'max')
"""

import contextlib
from typing import Any

from ember.tasks import contract
from ember.tasks.autoencoder import AutoEncoding
from ember.tasks.base import Evaluation, Task, registry
from ember.tasks.captioning import Captioning
from ember.tasks.classification import Classification
from ember.tasks.detection import Detection
from ember.tasks.diffusion import Diffusion
from ember.tasks.gan import GAN
from ember.tasks.generative import Generative
from ember.tasks.language_model import LanguageModel
from ember.tasks.regression import Regression
from ember.tasks.segmentation import Segmentation
from ember.tasks.seq2seq import Seq2Seq
from ember.tasks.spec import InputSpec, ModelSpec, NotApplicable, SpecError

register_task = registry.register


def create(name: str, /, **options: Any) -> Task:
    """The task ``name`` (`list_tasks`) built with ``options``; it remembers both, so a run can
    record which task trained it (its `ModelSpec`)."""
    task = registry.create(name, **options)
    with contextlib.suppress(AttributeError):  # a task type with __slots__ cannot carry the note
        task._ember_origin = (name, {k: v for k, v in options.items() if _jsonable(v)})  # type: ignore[attr-defined]
    return task


def _jsonable(value: Any) -> bool:
    return (
        value is None
        or isinstance(value, bool | int | float | str)
        or (isinstance(value, list | tuple) and all(_jsonable(v) for v in value))
    )


def list_tasks() -> list[str]:
    """Names accepted by :func:`create` (and by ``task.name`` in a config)."""
    return registry.names()


__all__ = [
    "InputSpec",
    "ModelSpec",
    "NotApplicable",
    "SpecError",
    "contract",
    "Classification",
    "Evaluation",
    "LanguageModel",
    "Regression",
    "Task",
    "create",
    "list_tasks",
    "register_task",
    "registry",
    "Detection",
    "Segmentation",
    "Seq2Seq",
    # generative
    "AutoEncoding",
    "Captioning",
    "Diffusion",
    "GAN",
    "Generative",
]
