"""A config in, a trained and recorded run out (``ember.fit`` and ``ember train``).

The recipe builds the data, the model and the task (:mod:`ember.recipe.build`), creates the run and
writes into it what the stages after training read (the split indices, the tokenizer, the model's
spec), then hands model, data and run to the :class:`~ember.train.Trainer`: one entrance to
training, for a config and for Python alike.

Fine-tuning keys of the ``model`` section (``pretrained``, ``lora``, ``freeze``, ``unfreeze``) are
applied by `ember.train.finetune.finetune_model` before training; the load report is saved as
``pretrained.json`` in the run, and a LoRA run's adapters are merged at the end
(``model.safetensors`` is then a plain model; ``adapters.safetensors`` holds the adapters).

Example:
    >>> import tempfile
    >>> result = train("configs/digits-cnn.yaml", {"trainer.epochs": 1, "model.name": "cnn_tiny"},
    ...                runs_dir=tempfile.mkdtemp())
    >>> 0.0 <= result.metrics["val/accuracy"] <= 1.0
    True
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ember._io import atomic_write_bytes
from ember.config import Config, ConfigError, load_config
from ember.data import build_augment, load_splits, save_splits
from ember.data.csv_table import PREPROCESS
from ember.recipe.build import Prepared, build_task, prepare
from ember.track import RunStore
from ember.train import distributed, finetune, hooks
from ember.train.precision import resolve_device, resolve_precision
from ember.train.records import write_spec
from ember.train.trainer import FitResult, Trainer, new_run


def train(
    config: str | Path | dict[str, Any] | Config,
    overrides: list[str] | dict[str, Any] | None = None,
    *,
    runs_dir: str | Path | None = None,
    resume: str | None = None,
    progress: bool | None = None,
    callbacks: Sequence[Any] = (),
    adapt: Callable[[Prepared, Any], tuple[Prepared, Any]] | None = None,
) -> FitResult:
    """Train a recipe end to end and record it in the run store.

    Args:
        config: a YAML path, a dict, or a Config.
        overrides: dotted overrides, ``["trainer.epochs=3"]`` or ``{"trainer.epochs": 3}``.
        runs_dir: the run store (default ``$EMBER_RUNS`` or ``runs``).
        resume: a run to continue from its newest checkpoint (its config must match).
        progress: progress bar on/off (None: only on a terminal).
        callbacks: extra training callbacks (a sweep's pruning, say).
        adapt: ``(prepared, task) -> (prepared, task)``, given by a stage above the recipe that
            changes what training sees (``ember.responsible.training.train``: fairness mitigation).

    Returns:
        The :class:`~ember.train.FitResult`; ``metrics`` holds the last validation and test metrics.
    """
    cfg = load_config(config, overrides)
    store = RunStore(runs_dir)
    main = distributed.is_main_process()  # in a torchrun job, rank 0 alone creates and writes the run
    if resume is None:  # torchrun restarted this job's workers (--max-restarts): continue its run
        resume = distributed.restarted_run(store)
    saved, resumed = None, None
    if resume is not None:
        resumed = store.get(resume).folder
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
    if adapt is not None:
        prep, task = adapt(prep, task)
    elif cfg.fairness.mitigate != "none":
        raise ConfigError(
            f"fairness.mitigate={cfg.fairness.mitigate} is applied by ember.responsible.training.train (as "
            "`ember train` does); call it instead of ember.fit"
        )
    run = None
    if resume is None and main:  # the run exists before training: the stages' files go in first
        precision = resolve_precision(cfg.trainer.precision, resolve_device(cfg.trainer.device))
        run = new_run(store, cfg, precision.name)
        save_splits(prep.splits, run.dir / "splits")
        write_spec(run, prep.spec)
        tokenizer = getattr(prep.bundle, "tokenizer", None)
        if tokenizer is not None:  # `ember generate RUN`, packaging and serving decode with it
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
    folder = run.dir if run is not None else resumed
    merge = finetune.MergeLoRA(folder / "adapters.safetensors" if main and folder is not None else None)
    trainer = Trainer(
        prep.model,
        task=task,
        config=cfg,
        augment=augment,
        run=run,
        runs_dir=runs_dir,
        progress=progress,
        callbacks=[*callbacks, *([merge] if cfg.model.lora.rank else [])],
        spec=prep.spec,
        record_data=False,  # the config and the saved split indices rebuild the data
        transforms=hooks.active(cfg),  # e.g. privacy: DP-SGD
    )
    trainer.data_sha256 = prep.data_sha256
    result = trainer.fit(prep.train, prep.val, resume=resume)
    if main and merge.adapters is not None and merge.adapters.is_file() and trainer.run is not None:
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


__all__ = ["final_task", "train"]
