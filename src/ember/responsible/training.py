"""``ember.responsible.train``: the recipe, with the config's fairness mitigation applied.

The recipe builds data, model and task as always; :func:`adapt_for_fairness` then gives the
training split's targets their groups (the ``fairness.sensitive`` columns) and wraps the task in a
:class:`~ember.responsible.mitigation.FairnessTask` that reweighs, resamples or constrains. The
validation split carries its groups too, so every epoch logs ``val/dp_difference`` (or
``val/eo_difference``) beside accuracy. The test split and the saved model are plain: every later
stage reads a mitigated run as any other.

Example:
    >>> import ember.responsible as rai  # doctest: +SKIP
    >>> rai.train("configs/adult-mlp.yaml", ["fairness.mitigate=exponentiated-gradient"])  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ember import recipe
from ember.config import Config, ConfigError, FairnessConfig, load_config
from ember.responsible.columns import NoColumnsError, sensitive_columns
from ember.responsible.fairness import intersect
from ember.responsible.mitigation import (
    ExponentiatedGradient,
    FairnessTask,
    balanced_sample,
    reweighing,
    with_groups,
)
from ember.train.trainer import FitResult


def train(
    config: str | Path | dict[str, Any] | Config,
    overrides: list[str] | dict[str, Any] | None = None,
    **options: Any,
) -> FitResult:
    """:func:`ember.recipe.train` with ``fairness.mitigate`` applied (nothing changes while it is none).

    Args:
        config, overrides: as for :func:`ember.fit`.
        **options: ``runs_dir``, ``resume``, ``progress``, passed on.
    """
    cfg = load_config(config, overrides)
    adapt = None
    if cfg.fairness.mitigate != "none":
        adapt = lambda prep, task: adapt_for_fairness(prep, task, cfg.fairness, seed=cfg.trainer.seed)  # noqa: E731
    return recipe.train(cfg, **options, adapt=adapt)


def group_codes(data: Any, names: tuple[str, ...] | list[str], vocabulary: list[str]) -> np.ndarray:
    """``(N,)`` codes into ``vocabulary`` of the (intersected) sensitive columns of ``data``."""
    columns = sensitive_columns(data, names)
    values = intersect(columns) if len(columns) > 1 else next(iter(columns.values()))
    index = {v: i for i, v in enumerate(vocabulary)}
    return np.asarray([index[v] for v in values], dtype=np.int64)


def adapt_for_fairness(
    prep: recipe.Prepared, task: Any, fc: FairnessConfig, *, seed: int = 0
) -> tuple[recipe.Prepared, Any]:
    """The prepared run and task with ``fc``'s mitigation (see the module docstring)."""
    if not fc.sensitive:
        raise ConfigError(
            f"fairness.mitigate={fc.mitigate} needs fairness.sensitive: the columns that define the groups, "
            "e.g. fairness.sensitive=sex"
        )
    train = prep.train
    y = getattr(train, "y", None)
    if not dataclasses.is_dataclass(train) or y is None or y.ndim != 1 or y.is_floating_point():
        raise ConfigError(
            f"fairness.mitigate needs class labels on an in-memory table (data.name={prep.config.data.name} "
            "gives none); it applies to classification runs on tabular data such as adult"
        )
    try:
        parts = [p for p in (train, prep.val) if p is not None]
        raw = [sensitive_columns(p, fc.sensitive) for p in parts]
    except NoColumnsError as e:
        raise ConfigError(f"fairness.sensitive: {e}") from None
    names = sorted(
        {v for cols in raw for v in (intersect(cols) if len(cols) > 1 else next(iter(cols.values())))}
    )
    groups = group_codes(train, fc.sensitive, names)
    labels = y.cpu().numpy()
    wrapped: FairnessTask
    gap = "eo_difference" if fc.constraint == "equalized-odds" else "dp_difference"
    if fc.mitigate == "reweighing":
        wrapped = FairnessTask(task, weights=reweighing(labels, groups), gap=gap)
        train = _relabel(train, with_groups(y, groups))
    elif fc.mitigate == "balanced-sampling":
        wrapped = FairnessTask(task, gap=gap)
        train = train.subset(balanced_sample(labels, groups, seed=seed))  # type: ignore[union-attr]
    else:
        k = int(prep.bundle.num_classes or labels.max() + 1)
        constraint = ExponentiatedGradient(
            fc.constraint, len(names), k, bound=fc.bound, eta=fc.eta, slack=fc.slack, window=fc.window
        )
        wrapped = FairnessTask(task, constraint=constraint, gap=gap)
        train = _relabel(train, with_groups(y, groups))
    val = prep.val
    if val is not None and dataclasses.is_dataclass(val) and getattr(val, "y", None) is not None:
        val = _relabel(val, with_groups(val.y, group_codes(val, fc.sensitive, names)))
    return dataclasses.replace(prep, train=train, val=val), wrapped


def _relabel(data: Any, y: torch.Tensor) -> Any:
    return dataclasses.replace(data, y=y.to(data.y.device))


__all__ = ["adapt_for_fairness", "group_codes", "train"]
