"""Training: the loop, the Trainer, optimizers and schedules, precision, checkpoints, callbacks,
fine-tuning (`ember.train.finetune`: pretrained weights by name, freezing)."""

from ember.train import finetune
from ember.train.callbacks import Callback, EarlyStopping, ProgressBar
from ember.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from ember.train.finetune import LoadReport, freeze, load_pretrained, unfreeze
from ember.train.loop import NonFiniteLossError, evaluate, evaluate_pass, fit, predict
from ember.train.optim import build_optimizer, build_schedule, optimizers, schedules
from ember.train.precision import resolve_device, resolve_precision
from ember.train.sealed import WeightsError
from ember.train.signals import Interrupted
from ember.train.state import TrainState
from ember.train.trainer import FitResult, Trainer

__all__ = [
    "Callback",
    "CheckpointError",
    "EarlyStopping",
    "FitResult",
    "Interrupted",
    "LoadReport",
    "NonFiniteLossError",
    "ProgressBar",
    "TrainState",
    "Trainer",
    "WeightsError",
    "build_optimizer",
    "build_schedule",
    "evaluate",
    "evaluate_pass",
    "finetune",
    "fit",
    "freeze",
    "latest_checkpoint",
    "load_checkpoint",
    "load_pretrained",
    "optimizers",
    "predict",
    "resolve_device",
    "resolve_precision",
    "save_checkpoint",
    "schedules",
    "unfreeze",
]
