"""A finished run's outputs on one of its splits: the model's raw outputs and the targets, in order.

Everything downstream (intervals, baselines, paired tests, the report) starts here. The outputs come
from the same :func:`ember.train.loop.evaluate` pass that gives the task's metrics, so the numbers
``ember eval`` prints are the ones training logged for the same weights and split. Tasks whose whole
outputs are too large to keep (a language model's logits, segmentation maps) or are not tensors
(detections) keep instead what the bootstrap resamples, per example: see ``per_example``.

Example:
    >>> import ember, tempfile
    >>> runs = tempfile.mkdtemp()
    >>> run = ember.fit("configs/digits-cnn.yaml", {"trainer.epochs": 1, "model.name": "cnn_tiny"}, runs_dir=runs)
    >>> p = run_predictions(run.run_id, "test", runs_dir=runs)
    >>> p.outputs.shape[0] == len(p.targets), round(p.metrics["accuracy"], 4) == round(run.metrics["test/accuracy"], 4)
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader

from ember.data import ArrayData, make_loader
from ember.data.text import TextBundle
from ember.evaluate.language_model import WindowNats
from ember.evaluate.segmentation import ConfusionPerImage
from ember.recipe import Prepared, build_task, final_task, load_run_model
from ember.tasks.base import Evaluation, Task
from ember.track import RunRecord
from ember.train.loop import evaluate
from ember.train.precision import resolve_device, resolve_precision

Split = Literal["train", "val", "test"]
KEPT = ("classification", "regression")  # tasks whose outputs the statistics and report know how to read


@dataclass
class RunPredictions:
    """One run's final model on one split.

    Attributes:
        record: the run's row in the store.
        prepared: its rebuilt data (same saved splits) and model (final weights).
        task: the task object built from the run's config; ``task_name`` its registered name.
        split: ``train``, ``val`` or ``test``; ``data`` that split's dataset.
        outputs: the model's outputs, concatenated on the CPU (``(N, K)`` logits for classification);
            empty for tasks other than classification and regression, whose outputs are not kept.
        targets: the targets in the same order (empty when the outputs are).
        metrics: the task's own metrics of this pass (loss included), as ``evaluate`` returns them.
        per_example: for the tasks whose outputs are not kept, what the bootstrap resamples, in data
            order: a language model's ``(windows, 3)`` nats / tokens / bytes per window
            (:class:`~ember.evaluate.language_model.WindowNats`), segmentation's ``(images, K, K)``
            confusion matrices, detection's ``(detections, truth)`` lists of per-image dicts,
            translation's evaluation (sentences, sources, per-sentence nats); None for other tasks.
    """

    record: RunRecord
    prepared: Prepared
    task: Task
    task_name: str
    split: str
    data: Any
    outputs: torch.Tensor
    targets: torch.Tensor
    metrics: dict[str, float]
    per_example: Any = None

    @property
    def train_data(self) -> Any:
        """The run's training split (what baselines are fitted on)."""
        return self.prepared.train

    @property
    def num_classes(self) -> int | None:
        return self.prepared.bundle.num_classes

    @property
    def classes(self) -> list[str] | None:
        return self.prepared.bundle.classes


def split_data(prepared: Prepared, split: str, run_id: str = "") -> Any:
    """The dataset of ``split`` in a prepared run, or ValueError naming the splits it has."""
    data = {"train": prepared.train, "val": prepared.val, "test": prepared.test}.get(split)
    if data is None:
        have = ", ".join(k for k in ("train", "val", "test") if getattr(prepared, k) is not None)
        raise ValueError(f"run {run_id} has no '{split}' split; it has: {have}")
    return data


def run_predictions(ref: str, split: str = "test", *, runs_dir: str | Path | None = None) -> RunPredictions:
    """Rebuild run ``ref`` (id, unique prefix or ``latest``) and collect its outputs on ``split``.

    Raises:
        ValueError: the run has no such split.
        FileNotFoundError: the run has no final weights (it failed or is still running).
    """
    prep, record = load_run_model(ref, runs_dir=runs_dir)
    data = split_data(prep, split, record.id)
    cfg = prep.config
    # a language model's task learns the tokenizer's bytes per token; a translation task decodes
    # every pair of any split with its final beam (as the test figures of training were made)
    task = final_task(build_task(cfg, prep.bundle))
    if cfg.task.name == "language_model" and isinstance(prep.bundle, TextBundle) and split == "train":
        # every training window once, in order, rather than the random windows training draws
        pool: Any = prep.bundle.train
        data = prep.bundle.loader(
            pool.subset(prep.splits["train"]), batch_size=cfg.data.eval_batch_size, train=False
        )
    collect = collector(cfg.task.name, task)
    outputs, targets, metrics = outputs_and_metrics(
        prep.model, data, task, batch_size=cfg.data.eval_batch_size, device=cfg.trainer.device,
        precision=cfg.trainer.precision, num_workers=cfg.data.num_workers, keep=cfg.task.name in KEPT,
        collect=collect,
    )  # fmt: skip
    return RunPredictions(
        record, prep, task, cfg.task.name, split, data, outputs, targets, metrics,
        per_example=collect.result() if collect is not None else None,
    )  # fmt: skip


def collector(task_name: str, task: Any) -> Any:
    """What keeps ``per_example`` during the pass for ``task_name`` (None: nothing beyond the outputs)."""
    if task_name == "language_model":
        return WindowNats(getattr(task, "token_bytes", None))
    if task_name == "segmentation":
        return ConfusionPerImage(ignore_index=int(getattr(task, "ignore_index", -100)))
    if task_name == "detection":
        return _Detections()
    if task_name == "seq2seq":
        return _Translations()
    return None


class _Translations:
    """A translation pass's evaluation itself: it keeps every decoded sentence, its source and nats."""

    def __init__(self) -> None:
        self.evaluation: Any = None

    def update(self, output: Any, target: Any) -> None:
        pass  # read from the evaluation at the end: the very sentences scored

    def finish(self, evaluation: Any) -> None:
        self.evaluation = evaluation

    def result(self) -> Any:
        return self.evaluation


class _Detections:
    """Detection's per-image detections and truth, as its evaluation decoded and kept them."""

    def __init__(self) -> None:
        self.evaluation: Any = None

    def update(self, output: Any, target: Any) -> None:
        pass  # `DetectionEvaluation` keeps them itself: read at the end, so they are the very ones scored

    def finish(self, evaluation: Any) -> None:
        self.evaluation = evaluation

    def result(self) -> tuple[list[Any], list[Any]]:
        ev = self.evaluation
        if ev is None or not hasattr(ev, "preds") or not hasattr(ev, "targets"):
            raise TypeError(
                "detection's evaluation kept no per-image detections (expected .preds and .targets)"
            )
        return ev.preds, ev.targets


def outputs_and_metrics(
    model: nn.Module,
    data: Any,
    task: Task,
    *,
    batch_size: int = 512,
    device: str = "auto",
    precision: str = "fp32",
    num_workers: int = 0,
    keep: bool = True,
    collect: Any = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """One :func:`~ember.train.loop.evaluate` pass over ``data`` that also keeps every output and target.

    Args:
        data: a dataset, ``(x, y)`` tensors, or a ready loader (a language model's windows) used as is.
        collect: also fed every ``(output, target)``, for what is kept per example (see :func:`collector`).

    Returns:
        ``(outputs, targets, metrics)``: outputs and targets concatenated on the CPU in data order; empty
        tensors when ``keep`` is False or the task's outputs are not tensors (detection's dicts, say).
    """
    dev = resolve_device(device)
    loader = (
        data
        if isinstance(data, DataLoader)
        else make_loader(
            data if not isinstance(data, tuple) else ArrayData(*data),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            device=dev,
        )
    )
    recording = _Recording(task, keep=keep, collect=collect)
    metrics = evaluate(
        model.to(dev), loader, recording, device=dev, precision=resolve_precision(precision, dev)
    )
    if not recording.keep or not recording.outputs:
        return torch.empty(0), torch.empty(0), metrics
    return torch.cat(recording.outputs), torch.cat(recording.targets), metrics


class _Recording:
    """The task, unchanged, except that its evaluation also keeps the outputs and targets it sees."""

    def __init__(self, task: Task, *, keep: bool = True, collect: Any = None) -> None:
        self.task = task
        self.keep = keep
        self.collect = collect
        self.headline = task.headline
        self.mode = task.mode
        self.outputs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def forward(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.task.forward(model, batch)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.task.loss(output, target)

    def evaluation(self) -> Evaluation:
        inner = self.task.evaluation()
        if self.collect is not None and hasattr(self.collect, "finish"):
            self.collect.finish(inner)
        return _RecordingEvaluation(inner, self)


class _RecordingEvaluation:
    def __init__(self, inner: Evaluation, into: _Recording) -> None:
        self.inner = inner
        self.into = into

    def update(self, output: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None:
        if self.into.keep and isinstance(output, torch.Tensor) and isinstance(target, torch.Tensor):
            self.into.outputs.append(output.detach().float().cpu())
            self.into.targets.append(target.detach().cpu())
        else:
            self.into.keep = False
        if self.into.collect is not None:
            self.into.collect.update(output, target)
        self.inner.update(output, target, loss)

    def compute(self) -> dict[str, float]:
        return self.inner.compute()


__all__ = ["RunPredictions", "collector", "outputs_and_metrics", "run_predictions", "split_data"]
