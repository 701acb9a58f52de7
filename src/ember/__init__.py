"""ember: the whole deep-learning lifecycle in one PyTorch toolkit.

Example:
    >>> import ember
    >>> model = ember.models.create("mlp_tiny", in_channels=1, image_size=8, num_classes=10)
    >>> trainer = ember.Trainer(model, lr=1e-3, epochs=1)
"""

from ember import data, models, responsible, tasks
from ember.config import Config, ConfigError, load_config
from ember.deploy.bundle import load
from ember.recipe import evaluate_run, train
from ember.train import FitResult, Trainer

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "FitResult",
    "Trainer",
    "__version__",
    "data",
    "evaluate_run",
    "load",
    "load_config",
    "models",
    "responsible",
    "tasks",
    "train",
]
