"""A finished run, rebuilt for a stage: its model (final weights), task, tokenizer and data.

Every stage after training (eval, report, check, package, export, serve, compress, plan, generate)
starts from :func:`load_run`. The model is rebuilt from the run's recorded
:class:`~ember.tasks.spec.ModelSpec`, never re-derived from the data; the task from the spec's task
name and options (plus the run's tokenizer). The data comes back the way the run was made:

- a recipe run (``ember train CONFIG`` / ``ember.fit``) reloads its data set from the config and
  takes the very split indices it saved, so every split is the one it trained and tested on;
- a Python run (``ember.Trainer(...).fit(...)``) reads the splits it kept
  (:mod:`ember.train.records`); a split it could not keep is named with the reason.

Example:
    >>> import ember, tempfile
    >>> runs = tempfile.mkdtemp()
    >>> result = ember.fit("configs/digits-cnn.yaml", {"trainer.epochs": 1, "model.name": "cnn_tiny"},
    ...                    runs_dir=runs)
    >>> run = load_run(result.run_id, runs_dir=runs)
    >>> run.spec.model, run.available_splits(), len(run.split("test")) > 0
    ('cnn_tiny', ['train', 'val', 'test'], True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from torch.utils.data import DataLoader, Subset

from ember.config import Config, load_config, parse_yaml
from ember.data import ArrayData, load_splits
from ember.data.csv_table import PREPROCESS
from ember.data.text import TextBundle
from ember.data.tokenizers import load_tokenizer
from ember.recipe.build import Prepared, prepare, task_for
from ember.recipe.train import final_task
from ember.tasks.base import Task
from ember.tasks.spec import ModelSpec, NotApplicable
from ember.track import RunRecord, RunStore
from ember.train.records import RecordError, read_spec, read_split, recorded_splits
from ember.train.sealed import read_safetensors
from ember.train.trainer import Trainer

SPLITS = ("train", "val", "test")


@dataclass
class LoadedRun:
    """A finished run rebuilt for a stage (see :func:`load_run`)."""

    record: RunRecord
    """The run's row in the store."""
    spec: ModelSpec
    """How the model is built, its task and its inputs."""
    model: nn.Module
    """The model with the run's final weights, in eval mode."""
    task: Task
    """The run's task, built from the spec (with the run's tokenizer)."""
    config: Config
    """The run's resolved config."""
    store: RunStore
    """The run store it lives in."""
    tokenizer: Any = None
    """The run's tokenizer (text runs), else None."""
    prepared: Prepared | None = None
    """A recipe run's rebuilt data (same splits), when loaded with data."""
    _splits: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def folder(self) -> Path:
        return self.record.folder

    @property
    def classes(self) -> list[str] | None:
        return self.spec.classes

    @property
    def num_classes(self) -> int | None:
        return len(self.spec.classes) if self.spec.classes else None

    @property
    def data_sha256(self) -> str | None:
        return self.prepared.data_sha256 if self.prepared is not None else self.record.data_sha256

    def available_splits(self) -> list[str]:
        """The splits this run can give back, in train / val / test order."""
        if self.prepared is not None:
            return [s for s in SPLITS if getattr(self.prepared, s) is not None]
        saved = recorded_splits(self.store, self.id)
        return [s for s in SPLITS if saved.get(s) == "saved"]

    def split(self, name: str) -> Any:
        """The data of split ``name`` (a dataset, ``ArrayData`` or a ready loader); ValueError naming
        the splits the run has when it has not this one."""
        if name not in SPLITS:
            have = ", ".join(self.available_splits()) or "none"
            raise ValueError(
                f"unknown split '{name}' (a run's splits are {', '.join(SPLITS)}); it has: {have}"
            )
        if name in self._splits:
            return self._splits[name]
        if self.prepared is not None:
            data = getattr(self.prepared, name)
        else:
            try:
                data = read_split(self.store, self.id, name)
            except RecordError as e:
                if "kept no" not in str(e):
                    raise  # a damaged file: say so, do not pretend the split is absent
                data = None
        if data is None:
            have = ", ".join(self.available_splits()) or "none"
            why = recorded_splits(self.store, self.id).get(name) if self.prepared is None else None
            raise ValueError(
                f"run {self.id} has no '{name}' split"
                + (f" ({why})" if why and why != "saved" else "")
                + f"; it has: {have}"
            )
        self._splits[name] = data
        return data

    def data_facts(self) -> dict[str, str]:
        """Where the run's data came from and how large each split is, as text (for reports)."""
        if self.prepared is not None:
            sizes = ", ".join(f"{k} {len(v)}" for k, v in self.prepared.splits.items())
            return {"dataset": self.prepared.bundle.name, "split sizes": sizes}
        kept = recorded_splits(self.store, self.id)
        sizes = ", ".join(
            f"{k} {len(self.split(k))}" if why == "saved" else f"{k} not kept ({why})"
            for k, why in kept.items()
        )
        return {"dataset": "given to Trainer.fit from Python", "split sizes": sizes or "none kept"}

    def eval_split(self, name: str, *, limit: int | None = None, seed: int = 0) -> Any:
        """Split ``name`` as an evaluation pass reads it: every example once, in a fixed order. The
        same as :meth:`split` except for a text recipe's training split, whose loader otherwise draws
        random windows (language models) or shuffles its batches (translation).

        With ``limit``, at most that many examples (a text recipe's: chunks or sentence pairs), a
        seeded random subset kept in order; a loader given from Python is read whole.
        """
        data = self.split(name)
        prep = self.prepared
        if prep is not None and isinstance(prep.bundle, TextBundle) and (name == "train" or limit):
            pool: Any = (
                prep.bundle.test if name == "test" and prep.bundle.test is not None else prep.bundle.train
            )
            index = prep.splits[name] if pool is prep.bundle.train else np.arange(len(pool))
            pool = pool.subset(_sample(index, limit, seed))
            return prep.bundle.loader(pool, batch_size=self.config.data.eval_batch_size, train=False)
        if limit is None or isinstance(data, DataLoader) or len(data) <= limit:
            return data
        index = _sample(np.arange(len(data)), limit, seed)
        return data.subset(index) if isinstance(data, ArrayData) else Subset(data, index.tolist())

    @property
    def train(self) -> Any:
        return self.split("train")

    def scoring_task(self, split: str) -> Task:
        """The task as it scores ``split``: the test split with a translation task's final beam."""
        return final_task(self.task) if split == "test" else self.task


def _sample(index: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """At most ``limit`` entries of ``index``, a seeded random choice kept in order."""
    if limit is None or len(index) <= limit:
        return index
    return np.sort(np.random.default_rng(seed).choice(index, size=limit, replace=False))


def load_run(
    ref: str, *, runs_dir: str | Path | None = None, data: bool = True, model: nn.Module | None = None
) -> LoadedRun:
    """Rebuild run ``ref`` (an id, a unique prefix, ``latest`` or ``latest:NAME``) for a stage.

    Args:
        ref: the run.
        runs_dir: the run store (default ``$EMBER_RUNS`` or ``runs``).
        data: also reload a recipe run's data (False: model, task and tokenizer only).
        model: the module to load the run's weights into instead of ``spec.build()`` (a run of a
            user's own module that names no entry point: the user builds it, e.g. to package it).

    Raises:
        FileNotFoundError: the run has no final weights (it failed or is still running).
        NotApplicable: the model cannot be rebuilt from code (a user's module with no entry point).
    """
    store = RunStore(runs_dir)
    record = store.get(ref)
    weights = record.folder / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"run {record.id} has no final weights ({weights}); status: {record.status}")
    config = load_config(parse_yaml(record.config))
    tokenizer_file = record.folder / "tokenizer.json"
    tokenizer = None
    if tokenizer_file.is_file():
        store.verify_file(record.id, "tokenizer.json")  # the one the run trained with, unchanged
        tokenizer = load_tokenizer(tokenizer_file)
    if (record.folder / PREPROCESS).is_file():  # a table's fitted encoder, read by prepare and the spec
        store.verify_file(record.id, PREPROCESS)
    spec = read_spec(store, record.id)
    prepared = None
    is_recipe = (record.folder / "splits").is_dir()
    if is_recipe and (data or spec is None):
        splits = load_splits(record.folder / "splits")
        prepared = prepare(
            config, splits=splits, runs_dir=runs_dir, tokenizer=tokenizer_file, saved=record.folder
        )
        if record.data_sha256 and prepared.data_sha256 != record.data_sha256:  # the data, or a split file
            raise ValueError(
                f"the data or the split files of run {record.id} changed since it trained (data sha256 "
                f"{record.data_sha256[:12]} then, {prepared.data_sha256[:12]} now; splits in {record.folder / 'splits'})"
            )
        spec = spec or prepared.spec  # a run recorded before specs existed
    if spec is None:
        raise RecordError(
            f"run {record.id} recorded no spec.json and has no config splits to rebuild one from"
        )
    if model is None and not spec.rebuildable:
        raise NotApplicable(
            f"run {record.id}'s model is a user's module with no entry point, so it cannot be rebuilt from its "
            "weights; train it with Trainer(..., spec=ModelSpec(entry_point='pkg.mod:build', ...)) or "
            "package it from Python with ember.deploy.package(RUN, OUT, model=YourModule(...)) (its ONNX graph is "
            "served)"
        )
    model = model if model is not None else spec.build()
    # checked against the sha256 the run store recorded when it was written (WeightsError if not)
    state = read_safetensors(weights, sha256=store.artifact_sha256(record.id, "model.safetensors"))[0]
    try:
        model.load_state_dict(state)  # a LoRA run's final weights are merged: a plain model
    except RuntimeError as e:
        raise RecordError(f"{weights} does not fit the model its spec describes: {e}") from None
    task = task_for(spec.task, spec.task_options, tokenizer)
    return LoadedRun(
        record=record,
        spec=spec,
        model=model.eval(),
        task=task,
        config=config,
        store=store,
        tokenizer=tokenizer,
        prepared=prepared if data else None,
    )


def evaluate_run(ref: str, split: str = "test", *, runs_dir: str | Path | None = None) -> dict[str, float]:
    """Metrics of a finished run's final model on one of its splits (``train``, ``val`` or ``test``).

    The metrics are logged into the run as ``eval/<split>/<name>``.
    """
    run = load_run(ref, runs_dir=runs_dir)
    data = run.split(split)
    trainer = Trainer(
        run.model, task=run.scoring_task(split), config=run.config, run=run.store.open(run.id), progress=False,
        record_data=False,
    )  # fmt: skip
    metrics = trainer.validate(data)
    assert trainer.run is not None
    trainer.run.log({f"eval/{split}/{k}": v for k, v in metrics.items()}, step=0)
    trainer.run.flush()
    return metrics


def load_run_model(ref: str, *, runs_dir: str | Path | None = None) -> tuple[Prepared, RunRecord]:
    """A recipe run's rebuilt data (same splits) with its final model in ``Prepared.model``.

    Stages read runs through :func:`load_run`; this is its form for code written against
    :class:`~ember.recipe.build.Prepared`. A Python run has no Prepared: use :func:`load_run`.
    """
    run = load_run(ref, runs_dir=runs_dir)
    if run.prepared is None:
        raise NotApplicable(
            f"run {run.id} was trained from Python, not from a config; read it with load_run()"
        )
    run.prepared.model = run.model
    run.prepared.spec = run.spec
    return run.prepared, run.record


def load_language_model(ref: str, *, runs_dir: str | Path | None = None) -> tuple[nn.Module, Any, Config]:
    """A finished text run's model (final weights, eval mode), tokenizer and config; no data loaded."""
    run = load_run(ref, runs_dir=runs_dir, data=False)
    if run.tokenizer is None:
        raise FileNotFoundError(f"run {run.id} saved no tokenizer.json: it is not a language-model run")
    return run.model, run.tokenizer, run.config


__all__ = ["LoadedRun", "evaluate_run", "load_language_model", "load_run", "load_run_model"]
