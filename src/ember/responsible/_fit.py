"""Train a recipe's model on examples of one's own choosing, through the one Trainer and loop.

Membership audits (shadow models) and federated clients train the run's config on other subsets
than the recipe's split; they reuse the recipe's model, task, augmentation and training hooks
(DP-SGD) here, never a copy of the loop. Each fit is recorded in ``runs_dir`` like any run (callers
pass a scratch store when the fits are internal steps, as a federated round's are).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ember.config import Config
from ember.data import ArrayData, DataBundle, build_augment
from ember.recipe import build_model, build_task
from ember.train import FitResult, Trainer
from ember.train import hooks as train_hooks


def fit_on(
    cfg: Config,
    bundle: DataBundle,
    train: ArrayData,
    val: ArrayData | None = None,
    *,
    model: nn.Module | None = None,
    runs_dir: str | Path | None = None,
    transforms: list[Any] | None = None,
) -> tuple[nn.Module, FitResult]:
    """Train ``cfg``'s model (a new one, or ``model``) on ``train``; returns the model and the result.

    ``transforms`` default to the config's training hooks (DP-SGD when ``privacy`` is on).
    """
    model = model if model is not None else build_model(cfg, bundle)
    augment = build_augment(
        cfg.data.augment, num_classes=bundle.num_classes, image_size=bundle.input_shape[-1]
    )
    trainer = Trainer(
        model,
        task=build_task(cfg, bundle),
        config=cfg,
        augment=augment,
        runs_dir=runs_dir,
        progress=False,
        transforms=train_hooks.active(cfg) if transforms is None else transforms,
    )
    return model, trainer.fit(train, val)


__all__ = ["fit_on"]
