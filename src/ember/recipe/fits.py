"""Does the config fit the data? One-line `ConfigError`s that name the key and what would fit.

The recipe asks twice: `resolve_task` once the data is loaded (the task and the data's targets must
agree; whole-number regression needs only one of ``data.task`` / ``task.name``), and `check_model`
once the model is built (a table needs a table model, token ids a text model, and any model must
take one example of the data).

Example:
    >>> from ember.config import load_config
    >>> from ember.data import load_dataset
    >>> cfg = load_config({"model": {"name": "tabular_mlp"}})
    >>> try:
    ...     check_model(cfg, load_dataset("digits"), None)
    ... except ConfigError as e:
    ...     print(str(e)[:60])
    model.name: 'tabular_mlp' takes table rows; this data is ima
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ember import models
from ember._registry import accepted_kwargs, did_you_mean
from ember.config import Config, ConfigError
from ember.data import ArrayData, DataBundle

__all__ = ["check_model", "check_task_options", "input_kind", "models_for", "resolve_task"]

BUILT_IN_TASKS = {"classification", "regression", "language_model", "seq2seq", "detection", "segmentation"}
KIND_WORDS = {
    "table": "table rows",
    "tokens": "token ids",
    "image": "images",
    "vectors": "feature vectors",
}


def input_kind(bundle: DataBundle) -> str:
    """``table``, ``tokens``, ``image`` or ``vectors``: what one example of ``bundle`` is."""
    if "cardinalities" in getattr(bundle, "model_inputs", {}):
        return "table"
    if getattr(bundle, "tokenizer", None) is not None:
        return "tokens"
    return "image" if len(bundle.input_shape) == 3 else "vectors"


def _model_kind(name: str) -> str:
    accepted = accepted_kwargs(models.registry.get(name)) or set()
    if "cardinalities" in accepted:
        return "table"
    if "vocab_size" in accepted:
        return "tokens"
    return "image"  # vision models; an MLP also takes feature vectors (checked by running it)


def models_for(kind: str) -> list[str]:
    """Zoo models that take inputs of ``kind`` (an MLP counts for vectors)."""
    names = models.list_models()
    if kind == "vectors":
        return [n for n in names if n.startswith("mlp")]
    return [n for n in names if _model_kind(n) == kind]


def describe(bundle: DataBundle) -> str:
    """``a table of 14 columns``, ``images (1, 8, 8)`` ..."""
    kind = input_kind(bundle)
    encoder = getattr(bundle, "encoder", None)
    if kind == "table" and encoder is not None:
        return f"table rows ({len(encoder.columns)} columns)"
    return f"{KIND_WORDS[kind]} of shape {tuple(bundle.input_shape)}"


def resolve_task(cfg: Config, bundle: DataBundle) -> Config:
    """``cfg`` with its task agreeing with the data's targets, or a ConfigError saying which key to set.

    Regression data under the default ``task.name: classification`` (with no classification
    options) becomes a regression run: ``data.task: regression`` alone is enough.
    """
    want, have = bundle.task, cfg.task.name
    if want == have or have not in BUILT_IN_TASKS or want not in BUILT_IN_TASKS:
        return cfg
    if want == "regression" and have == "classification":
        if cfg.task.options:
            keys = ", ".join(f"task.{k}" for k in cfg.task.options)
            raise ConfigError(
                f"{keys} is for classification, but data '{cfg.data.name}' has regression targets "
                "(numbers); remove it, or set data.task: classification"
            )
        return dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, name="regression"))
    hint = " (or data.task: regression for whole-number targets)" if have == "regression" else ""
    raise ConfigError(
        f"task.name: '{have}' does not fit data '{cfg.data.name}', whose targets are for '{want}'; "
        f"set task.name: {want}{hint}"
    )


def check_task_options(cfg: Config) -> None:
    """ConfigError for a ``task.*`` key the task does not take, naming the tasks that do take it."""
    from ember import tasks

    accepted = accepted_kwargs(tasks.registry.get(cfg.task.name))
    if accepted is None:
        return
    for key in cfg.task.options:
        if key in accepted:
            continue
        owners = [t for t in tasks.list_tasks() if key in (accepted_kwargs(tasks.registry.get(t)) or set())]
        where = (
            f"it is an option of {', '.join(owners)}"
            if owners
            else f"no task takes it{did_you_mean(key, sorted(accepted))}"
        )
        raise ConfigError(
            f"task.{key} does not fit task '{cfg.task.name}' (its options: {', '.join(sorted(accepted)) or 'none'}); "
            f"{where}. Remove task.{key}"
        )


def check_model(
    cfg: Config, bundle: DataBundle, model: nn.Module | None, train: Any = None, task: Any = None
) -> None:
    """ConfigError unless ``cfg.model.name`` takes the data's inputs (and, built, runs on one example).

    Args:
        model: the built model, tried on two training examples when ``train`` is in-memory data;
            None checks the name only.
        task: the run's task: the examples go through its ``forward`` (a diffusion task adds the
            noise level, a captioner the phrase), with the random state left as it was; None calls
            the model on the inputs alone.
    """
    kind = input_kind(bundle)
    name = cfg.model.name
    if name not in models.registry:
        return  # a user's own module, passed to the Trainer directly
    takes = _model_kind(name)
    fits = takes == kind or (kind == "vectors" and takes == "image")
    if not fits:
        raise ConfigError(
            f"model.name: '{name}' takes {KIND_WORDS[takes]}; this data is {describe(bundle)}. "
            f"Models that fit: {', '.join(models_for(kind)) or 'none in the zoo'}"
        )
    if model is None or not isinstance(train, ArrayData) or not len(train):
        return
    was_training = model.training
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            if task is None:
                model.eval()(train.x[:2])
            else:
                task.forward(model.eval(), (train.x[:2], train.y[:2]))
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"model.name: '{name}' does not run on this data, {describe(bundle)}: {first}. "
            f"Models that fit: {', '.join(models_for(kind))}"
        ) from None
    finally:
        model.train(was_training)
