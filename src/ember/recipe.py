"""Recipes: a config in, a trained and recorded run out (``ember.train`` and ``ember train``).

This is where the zoo names in a config become objects: the dataset, its seeded splits, the model
(filled with the data's shape), the task, the augmentation and the Trainer. Everything a user can
misname is checked before any data is loaded or any step is taken.

Splits take whole groups when the data has them (``DataBundle.groups``: a document's paragraphs
never straddle train and test). Fine-tuning keys of the ``model`` section (``pretrained``, ``lora``,
``freeze``, ``unfreeze``) are applied by `ember.train.finetune.finetune_model` before training; the
load report is saved as ``pretrained.json`` in the run, and a LoRA run's adapters are merged at the
end (``model.safetensors`` is then a plain model; ``adapters.safetensors`` holds the adapters).
``data.tokenizer: pretrained`` encodes the data with the tokenizer saved with ``model.pretrained``.

Example:
    >>> import ember, tempfile
    >>> result = ember.train("configs/digits-cnn.yaml",
    ...                      overrides={"trainer.epochs": 1, "model.name": "cnn_tiny"}, runs_dir=tempfile.mkdtemp())
    >>> 0.0 <= result.metrics["val/accuracy"] <= 1.0
    True
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Subset

from ember import fits, models, tasks
from ember._registry import accepted_kwargs, check_kwargs
from ember.config import Config, ConfigError, load_config
from ember.data import (
    ArrayData,
    DataBundle,
    build_augment,
    fingerprint,
    fingerprint_indices,
    load_dataset,
    load_splits,
    save_splits,
    split_groups,
    split_indices,
)
from ember.data import registry as datasets
from ember.data.csv_table import PREPROCESS
from ember.data.text import TextBundle
from ember.data.tokenizers import load_tokenizer
from ember.track import RunStore, seed_everything
from ember.train import finetune
from ember.train.checkpoint import atomic_write_bytes
from ember.train.loggers import check_loggers
from ember.train.optim import optimizers, schedules
from ember.train.trainer import FitResult, Trainer


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


def build_model(cfg: Config, bundle: DataBundle) -> nn.Module:
    """The zoo model of ``cfg``, with in_channels / num_classes / image_size filled from the data."""
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
    return models.create(cfg.model.name, **fill, **cfg.model.options)


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
    builder = tasks.registry.get(cfg.task.name)
    tokenizer = getattr(bundle, "tokenizer", None)
    fill: dict[str, Any] = {}
    accepted = accepted_kwargs(builder) or set()
    if tokenizer is not None and "token_bytes" in accepted:
        fill["token_bytes"] = tokenizer.token_bytes()
    if tokenizer is not None and "tokenizer" in accepted:  # a translation task detokenizes with it
        fill["tokenizer"] = tokenizer
    return tasks.create(cfg.task.name, **{**fill, **cfg.task.options})


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
    fits.check_model(cfg, bundle, model, train)
    return Prepared(cfg, bundle, splits, train, val, test, model, h.hexdigest())


def train(
    config: str | Path | dict[str, Any] | Config,
    overrides: list[str] | dict[str, Any] | None = None,
    *,
    runs_dir: str | Path | None = None,
    resume: str | None = None,
    progress: bool | None = None,
) -> FitResult:
    """Train a recipe end to end and record it in the run store.

    Args:
        config: a YAML path, a dict, or a Config.
        overrides: dotted overrides, ``["trainer.epochs=3"]`` or ``{"trainer.epochs": 3}``.
        runs_dir: the run store (default ``$EMBER_RUNS`` or ``runs``).
        resume: a run to continue from its newest checkpoint (its config must match).
        progress: progress bar on/off (None: only on a terminal).

    Returns:
        The :class:`~ember.train.FitResult`; ``metrics`` holds the last validation and test metrics.
    """
    cfg = load_config(config, overrides)
    saved, resumed = None, None
    if resume is not None:
        resumed = RunStore(runs_dir).get(resume).folder
        saved = load_splits(resumed / "splits")
    prep = prepare(
        cfg, splits=saved, runs_dir=runs_dir, tokenizer=resumed and resumed / "tokenizer.json", saved=resumed
    )
    cfg = prep.config  # as the data resolved it (a regression task for regression targets)
    try:  # pretrained weights (not when resuming: the checkpoint has them), LoRA, freezing
        report = finetune.finetune_model(prep.model, cfg.model, runs_dir=runs_dir, load=resume is None)
    except (finetune.PretrainedError, ValueError) as e:
        raise ConfigError(str(e)) from None
    augment = build_augment(
        cfg.data.augment, num_classes=prep.bundle.num_classes, image_size=prep.bundle.input_shape[-1]
    )
    task = build_task(cfg, prep.bundle)
    merge = finetune.MergeLoRA(resumed / "adapters.safetensors" if resumed else None)
    trainer = Trainer(
        prep.model,
        task=task,
        config=cfg,
        augment=augment,
        runs_dir=runs_dir,
        progress=progress,
        callbacks=[merge] if cfg.model.lora.rank else [],
    )
    trainer.data_sha256 = prep.data_sha256
    if resume is None:
        run = trainer.start_run()
        merge.adapters = run.dir / "adapters.safetensors"
        save_splits(prep.splits, run.dir / "splits")
        tokenizer = getattr(prep.bundle, "tokenizer", None)
        if tokenizer is not None:  # `ember generate RUN` decodes with it
            tokenizer.save(run.dir / "tokenizer.json")
            run.artifact(run.dir / "tokenizer.json", "tokenizer")
        encoder = getattr(prep.bundle, "encoder", None)
        if encoder is not None:  # a table's fitted preprocessing: eval, package and serve encode rows with it
            encoder.save(run.dir / PREPROCESS)
            run.artifact(run.dir / PREPROCESS, "preprocess")
        if report is not None:  # what came from the pretrained weights, and what trains
            info = {**report.to_dict(), "trainable": finetune.trainable_summary(prep.model)}
            atomic_write_bytes(run.dir / "pretrained.json", json.dumps(info, indent=1).encode())
            run.artifact(run.dir / "pretrained.json", "pretrained")
    result = trainer.fit(prep.train, prep.val, resume=resume)
    if merge.adapters is not None and merge.adapters.is_file() and trainer.run is not None:
        trainer.run.artifact(merge.adapters, "adapters")
    if prep.test is not None and trainer.run is not None:
        trainer.task = final_task(task)
        test = trainer.test(prep.test)
        result.metrics.update({f"test/{k}": v for k, v in test.items()})
    return result


def final_task(task: Any) -> Any:
    """The task as it scores the test split: a translation task then decodes with its full beam."""
    for_test = getattr(task, "for_test", None)
    return for_test() if callable(for_test) else task


def load_run_model(ref: str, *, runs_dir: str | Path | None = None) -> tuple[Prepared, Any]:
    """Rebuild a finished run's data (same splits) and model (its final weights)."""
    record = RunStore(runs_dir).get(ref)
    weights = record.folder / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"run {record.id} has no final weights ({weights}); status: {record.status}")
    cfg = load_config(_yaml(record.config))
    splits = load_splits(record.folder / "splits")
    prep = prepare(
        cfg, splits=splits, runs_dir=runs_dir, tokenizer=record.folder / "tokenizer.json", saved=record.folder
    )
    prep.model.load_state_dict(load_file(weights))  # a LoRA run's final weights are merged: a plain model
    return prep, record


def evaluate_run(ref: str, split: str = "test", *, runs_dir: str | Path | None = None) -> dict[str, float]:
    """Metrics of a finished run's final model on one of its splits (``train``, ``val`` or ``test``)."""
    prep, record = load_run_model(ref, runs_dir=runs_dir)
    data = {"train": prep.train, "val": prep.val, "test": prep.test}.get(split)
    if data is None:
        raise ValueError(
            f"run {record.id} has no '{split}' split; it has: train, val" + (", test" if prep.test else "")
        )
    task = build_task(prep.config, prep.bundle)
    task = final_task(task) if split == "test" else task
    trainer = Trainer(prep.model, task=task, config=prep.config, runs_dir=runs_dir, progress=False)
    metrics = trainer.validate(data)
    run = trainer.store.open(record.id)
    run.log({f"eval/{split}/{k}": v for k, v in metrics.items()}, step=0)
    run.flush()
    return metrics


def load_language_model(ref: str, *, runs_dir: str | Path | None = None) -> tuple[nn.Module, Any, Config]:
    """A finished language-model run's model (final weights, eval mode), tokenizer and config.

    Needs only the run folder (``tokenizer.json``, ``model.safetensors``, the config), not the data.
    """
    record = RunStore(runs_dir).get(ref)
    weights, tokenizer_file = record.folder / "model.safetensors", record.folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise FileNotFoundError(f"run {record.id} saved no tokenizer.json: it is not a language-model run")
    if not weights.is_file():
        raise FileNotFoundError(f"run {record.id} has no final weights ({weights}); status: {record.status}")
    cfg = load_config(_yaml(record.config))
    tokenizer = load_tokenizer(tokenizer_file)
    block_size = cfg.data.options.get("block_size")
    if block_size is None:  # the data set builder's default
        block_size = inspect.signature(datasets.get(cfg.data.name)).parameters["block_size"].default
    builder = models.registry.get(cfg.model.name)
    accepted = accepted_kwargs(builder) or set()
    fill = {
        k: v
        for k, v in _text_options(tokenizer, int(block_size), None).items()
        if k in accepted and k not in cfg.model.options
    }
    model = models.create(cfg.model.name, **fill, **cfg.model.options)
    model.load_state_dict(load_file(weights))
    return model.eval(), tokenizer, cfg


def _yaml(text: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(text) or {}


__all__ = [
    "Prepared",
    "build_model",
    "build_task",
    "final_task",
    "check",
    "evaluate_run",
    "load_language_model",
    "load_run_model",
    "prepare",
    "train",
]
