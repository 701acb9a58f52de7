"""Config → objects: the data, its seeded splits, the model (filled with the data's shape), the task,
and the model's :class:`~ember.tasks.spec.ModelSpec`.

Everything a user can misname is checked (:func:`check`) before any data is loaded. Splits take
whole groups when the data has them (``DataBundle.groups``: a document's paragraphs never straddle
train and test). ``data.tokenizer: pretrained`` encodes the data with the tokenizer saved with
``model.pretrained``.

Example:
    >>> from ember.config import load_config
    >>> prep = prepare(load_config({"model": {"name": "cnn_tiny"}}))
    >>> prep.spec.model, prep.spec.inputs.kind, prep.spec.inputs.shape
    ('cnn_tiny', 'image', (1, 8, 8))
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from torch.utils.data import Subset

from ember import models, tasks
from ember._registry import accepted_kwargs, check_kwargs
from ember.config import Config, ConfigError
from ember.data import (
    ArrayData,
    DataBundle,
    fingerprint,
    fingerprint_indices,
    load_dataset,
    split_groups,
    split_indices,
)
from ember.data import registry as datasets
from ember.data.text import TextBundle
from ember.recipe import fits
from ember.tasks.spec import InputSpec, ModelSpec
from ember.track import seed_everything
from ember.train import finetune, hooks
from ember.train.loggers import check_loggers
from ember.train.optim import optimizers, schedules


@dataclass
class Prepared:
    """Everything built from a config, ready to train."""

    config: Config
    bundle: DataBundle
    splits: dict[str, np.ndarray]
    train: Any
    val: Any | None
    test: Any | None
    model: nn.Module
    data_sha256: str
    spec: ModelSpec


def check(cfg: Config) -> None:
    """Fail fast on misnamed zoo entries and builder options, before any data is touched."""
    try:
        check_kwargs(models.registry.get(cfg.model.name), cfg.model.options, f"model '{cfg.model.name}'")
        check_kwargs(datasets.get(cfg.data.name), cfg.data.options, f"dataset '{cfg.data.name}'")
        tasks.registry.get(cfg.task.name)
        fits.check_task_options(cfg)  # label_smoothing on regression: which tasks take it
        check_loggers(cfg.trainer.loggers)
        optimizers.get(cfg.optim.name)
        schedules.get(cfg.schedule.name)
    except (KeyError, TypeError) as e:
        raise ConfigError(str(e)) from None


def _labels(data: Any) -> np.ndarray | None:
    if isinstance(data, ArrayData):
        return data.y.numpy() if data.y.ndim == 1 and not data.y.is_floating_point() else None
    targets = getattr(data, "targets", None)
    return np.asarray(targets) if targets is not None else None


def _subset(data: Any, idx: np.ndarray) -> Any:
    # ArrayData and text TokenChunks select their own examples; any other Dataset gets a Subset
    return data.subset(idx) if hasattr(data, "subset") else Subset(data, idx.tolist())


def model_kwargs(cfg: Config, bundle: DataBundle) -> dict[str, Any]:
    """The zoo builder's kwargs for ``cfg``: its options plus in_channels / num_classes / image_size /
    vocabulary filled from the data (what the run's spec records)."""
    builder = models.registry.get(cfg.model.name)
    accepted = accepted_kwargs(builder) or set()
    shape = bundle.input_shape
    known: dict[str, Any] = {"num_classes": bundle.num_classes or 1, **getattr(bundle, "model_inputs", {})}
    tokenizer = getattr(bundle, "tokenizer", None)
    if tokenizer is not None:  # text: (block_size,) token ids
        known = _text_options(
            tokenizer, shape[0], bundle.num_classes if bundle.task != "language_model" else None
        )
    elif len(shape) == 3:
        known.update(in_channels=shape[0], image_size=shape[1])
    elif len(shape) == 1:
        known.update(in_features=shape[0], in_channels=shape[0], image_size=1)
    fill = {k: v for k, v in known.items() if k in accepted and k not in cfg.model.options}
    return {**fill, **cfg.model.options}


def build_model(cfg: Config, bundle: DataBundle) -> nn.Module:
    """The zoo model of ``cfg``, with in_channels / num_classes / image_size filled from the data, and
    the structure its training hooks need (DP-SGD: BatchNorm → GroupNorm)."""
    return hooks.apply_model(cfg, models.create(cfg.model.name, **model_kwargs(cfg, bundle)))


def input_spec(bundle: DataBundle) -> InputSpec:
    """What one input of ``bundle`` looks like: token ids when it has a tokenizer, else by its shape."""
    shape = tuple(int(d) for d in bundle.input_shape)
    tokenizer = getattr(bundle, "tokenizer", None)
    if tokenizer is not None:
        return InputSpec("tokens", shape, "int64", vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id)
    if len(shape) == 3:
        return InputSpec("image", shape, value_range=(0.0, 1.0))  # ember's image convention
    if len(shape) == 1:
        columns = getattr(bundle, "columns", None)
        return InputSpec("table", shape, columns=tuple(columns) if columns else None)
    return InputSpec("vector", shape)


def model_spec(cfg: Config, bundle: DataBundle) -> ModelSpec:
    """The spec a recipe run records: the zoo model and kwargs, the task and the data's inputs."""
    encoder = getattr(bundle, "encoder", None)
    return ModelSpec(
        task=cfg.task.name,
        inputs=input_spec(bundle),
        model=cfg.model.name,
        kwargs=model_kwargs(cfg, bundle),
        task_options={k: v for k, v in cfg.task.options.items()},
        classes=[str(c) for c in bundle.classes] if bundle.classes else None,
        tokenizer=getattr(bundle, "tokenizer", None) is not None,
        transforms=hooks.structure(cfg),
        preprocess=encoder.to_spec() if encoder is not None else None,  # a table's RowEncoder
    )


def _text_options(tokenizer: Any, block_size: int, num_classes: int | None) -> dict[str, Any]:
    """Builder options a text model takes from its data: vocabulary, context, padding id."""
    known: dict[str, Any] = {
        "vocab_size": tokenizer.vocab_size,
        "block_size": block_size,
        "max_len": block_size,
    }
    if tokenizer.pad_id is not None:
        known["pad_id"] = tokenizer.pad_id
    if num_classes is not None:
        known["num_classes"] = num_classes
    return known


def build_task(cfg: Config, bundle: DataBundle) -> tasks.Task:
    """The task of ``cfg``; a language model's also learns the tokenizer's bytes per token."""
    return task_for(cfg.task.name, cfg.task.options, getattr(bundle, "tokenizer", None))


def task_for(name: str, options: dict[str, Any], tokenizer: Any = None) -> tasks.Task:
    """Task ``name`` with ``options``, plus what it takes from a tokenizer (bytes per token, decoding)."""
    builder = tasks.registry.get(name)
    fill: dict[str, Any] = {}
    accepted = accepted_kwargs(builder) or set()
    if tokenizer is not None and "token_bytes" in accepted:
        fill["token_bytes"] = tokenizer.token_bytes()
    if tokenizer is not None and "tokenizer" in accepted:  # a translation task detokenizes with it
        fill["tokenizer"] = tokenizer
    return tasks.create(name, **{**fill, **options})


def _data_options(cfg: Config, runs_dir: str | Path | None, tokenizer: Path | None) -> dict[str, Any]:
    """``cfg.data.options`` with ``tokenizer: pretrained`` replaced by the tokenizer file it means."""
    options = dict(cfg.data.options)
    if cfg.task.name == "regression" and "task" not in options and "task" in _data_keys(cfg):
        options["task"] = "regression"  # whole-number targets: task.name alone says regression
    if options.get("tokenizer") != "pretrained":
        return options
    if tokenizer is not None and tokenizer.is_file():  # a finished run's own copy
        return {**options, "tokenizer": str(tokenizer)}
    if not cfg.model.pretrained:
        raise ConfigError(
            "data.tokenizer: pretrained needs model.pretrained (the run whose tokenizer to use)"
        )
    try:
        folder = finetune.run_folder(cfg.model.pretrained, runs_dir=runs_dir)
    except finetune.PretrainedError as e:
        raise ConfigError(str(e)) from None
    if folder is None or not (folder / "tokenizer.json").is_file():
        raise ConfigError(
            f"data.tokenizer: pretrained, but model.pretrained={cfg.model.pretrained!r} is not a run with a "
            "tokenizer.json; give data.tokenizer the path of the tokenizer file instead"
        )
    return {**options, "tokenizer": str(folder / "tokenizer.json")}


def _data_keys(cfg: Config) -> set[str]:
    return accepted_kwargs(datasets.get(cfg.data.name)) or set()


def prepare(
    cfg: Config,
    *,
    splits: dict[str, np.ndarray] | None = None,
    runs_dir: str | Path | None = None,
    tokenizer: Path | None = None,
    saved: Path | None = None,
) -> Prepared:
    """Load data, split it (or reuse ``splits``), and build the model, seeded.

    ``runs_dir`` is where a ``model.pretrained`` run is looked up (for ``data.tokenizer:
    pretrained``); ``tokenizer`` is a finished run's own tokenizer file, used for that instead.
    A data set whose preprocessing is fitted on the training split (a table's `RowEncoder`) is
    fitted here, after the split; ``saved`` is a finished run's folder whose fitted one to reuse.
    """
    check(cfg)
    bundle = load_dataset(cfg.data.name, **_data_options(cfg, runs_dir, tokenizer))
    cfg = fits.resolve_task(cfg, bundle)  # regression targets under the default task: a regression run
    pool = bundle.train
    if splits is None:  # the data set's own held-out parts, if it has them (translation: whole books)
        splits = getattr(bundle, "splits", None)
    if splits is None:
        test_fraction = 0.0 if bundle.test is not None else cfg.data.test_fraction
        how: dict[str, Any] = {
            "val_fraction": cfg.data.val_fraction,
            "test_fraction": test_fraction,
            "seed": cfg.data.split_seed,
            "stratified": cfg.data.split == "stratified",
        }
        groups = getattr(bundle, "groups", None)
        if groups is not None:  # whole documents (groups) go to one split
            splits = split_groups(groups, _labels(pool), **how)
        else:
            splits = split_indices(_labels(pool), len(pool), **how)  # type: ignore[arg-type]
    size = len(pool)  # type: ignore[arg-type]
    for part, idx in splits.items():  # saved split files: damaged ones must not index past the data
        if len(idx) and int(idx.max()) >= size:
            raise ValueError(f"split '{part}' holds index {int(idx.max())}, but the data has {size} examples")
    raw = pool
    if callable(getattr(bundle, "fit", None)):  # fitted on the training split only (tables)
        bundle = bundle.fit(splits["train"], saved)  # type: ignore[attr-defined]
        pool = bundle.train
    train = _subset(pool, splits["train"])
    val = _subset(pool, splits["val"]) if len(splits.get("val", ())) else None
    test = (
        bundle.test
        if bundle.test is not None
        else (_subset(pool, splits["test"]) if "test" in splits else None)
    )
    h = hashlib.sha256()
    if isinstance(raw, ArrayData):
        h.update(fingerprint(raw.x, raw.y).encode())
    else:  # a data set that can hash itself (text token streams, tables as read) does
        h.update(raw.fingerprint().encode() if hasattr(raw, "fingerprint") else bundle.name.encode())
    for name in sorted(splits):
        h.update(f"{name}:{fingerprint_indices(splits[name])}".encode())
    if isinstance(bundle, TextBundle):  # token chunks → window batches (random ones for training)
        train = bundle.loader(train, batch_size=cfg.data.batch_size, train=True, seed=cfg.trainer.seed)
        val, test = (
            bundle.loader(part, batch_size=cfg.data.eval_batch_size, train=False) if part else None
            for part in (val, test)
        )
    seed_everything(cfg.trainer.seed)
    fits.check_model(cfg, bundle, None)  # a CNN on a table: one line naming the models that fit
    model = build_model(cfg, bundle)
    fits.check_model(cfg, bundle, model, train, build_task(cfg, bundle))
    return Prepared(cfg, bundle, splits, train, val, test, model, h.hexdigest(), model_spec(cfg, bundle))


__all__ = [
    "Prepared",
    "build_model",
    "build_task",
    "check",
    "input_spec",
    "model_kwargs",
    "model_spec",
    "prepare",
    "task_for",
]
