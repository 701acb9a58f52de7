"""ember: the whole deep-learning lifecycle in one PyTorch toolkit.

``ember.fit`` trains a recipe (a config) end to end; ``ember.Trainer`` trains a user's own model
and data. The subpackages are the layers of ARCHITECTURE.md: ``ember.models``, ``ember.data``,
``ember.tasks``, ``ember.train``, ``ember.evaluate``, ``ember.deploy`` and the rest.

Example:
    >>> import ember
    >>> model = ember.models.create("mlp_tiny", in_channels=1, image_size=8, num_classes=10)
    >>> trainer = ember.Trainer(model, lr=1e-3, epochs=1)
    >>> ember.train.Trainer is ember.Trainer
    True
"""

from ember import data, models, tasks, train
from ember._version import __version__
from ember.config import Config, ConfigError, load_config
from ember.deploy.bundle import load
from ember.recipe import evaluate_run, load_run
from ember.recipe import train as fit
from ember.responsible import privacy as _privacy  # noqa: F401 - registers the `privacy` training hook
from ember.train import FitResult, Trainer

__all__ = [
    "Config",
    "ConfigError",
    "FitResult",
    "Trainer",
    "__version__",
    "data",
    "evaluate_run",
    "fit",
    "load",
    "load_run",
    "load_config",
    "models",
    "responsible",
    "tasks",
    "train",
]
