"""Tasks: what is learned. A task owns the loss, the metrics and how a batch is stepped.

Example:
    >>> from ember import tasks
    >>> task = tasks.create("classification", label_smoothing=0.1)
    >>> task.headline, task.mode
    ('accuracy', 'max')
"""

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

create = registry.create
register_task = registry.register


def list_tasks() -> list[str]:
    """Names accepted by :func:`create` (and by ``task.name`` in a config)."""
    return registry.names()


__all__ = [
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
