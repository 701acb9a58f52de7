"""A finished run's outputs on one of its splits: the model's raw outputs and the targets, in order.

Everything downstream (intervals, baselines, paired tests, the report) starts here. The outputs come
from the same :func:`ember.train.loop.evaluate` pass that gives the task's metrics, so the numbers
``ember eval`` prints are the ones training logged for the same weights and split.

Example:
    >>> import ember, tempfile
    >>> runs = tempfile.mkdtemp()
    >>> run = ember.train("configs/digits-cnn.yaml", {"trainer.epochs": 1, "model.name": "cnn_tiny"}, runs_dir=runs)
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

from ember import tasks
from ember.data import ArrayData, make_loader
from ember.recipe import Prepared, load_run_model
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
    task = tasks.create(cfg.task.name, **cfg.task.options)
    outputs, targets, metrics = outputs_and_metrics(
        prep.model, data, task, batch_size=cfg.data.eval_batch_size, device=cfg.trainer.device,
        precision=cfg.trainer.precision, num_workers=cfg.data.num_workers, keep=cfg.task.name in KEPT,
    )  # fmt: skip
    return RunPredictions(record, prep, task, cfg.task.name, split, data, outputs, targets, metrics)


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
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """One :func:`~ember.train.loop.evaluate` pass over ``data`` that also keeps every output and target.

    Returns:
        ``(outputs, targets, metrics)``: outputs and targets concatenated on the CPU in data order; empty
        tensors when ``keep`` is False or the task's outputs are not tensors (detection's dicts, say).
    """
    dev = resolve_device(device)
    loader = make_loader(
        data if not isinstance(data, tuple) else ArrayData(*data),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        device=dev,
    )
    recording = _Recording(task, keep=keep)
    metrics = evaluate(
        model.to(dev), loader, recording, device=dev, precision=resolve_precision(precision, dev)
    )
    if not recording.keep or not recording.outputs:
        return torch.empty(0), torch.empty(0), metrics
    return torch.cat(recording.outputs), torch.cat(recording.targets), metrics


class _Recording:
    """The task, unchanged, except that its evaluation also keeps the outputs and targets it sees."""

    def __init__(self, task: Task, *, keep: bool = True) -> None:
        self.task = task
        self.keep = keep
        self.headline = task.headline
        self.mode = task.mode
        self.outputs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def forward(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.task.forward(model, batch)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.task.loss(output, target)

    def evaluation(self) -> Evaluation:
        return _RecordingEvaluation(self.task.evaluation(), self)


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
        self.inner.update(output, target, loss)

    def compute(self) -> dict[str, float]:
        return self.inner.compute()


__all__ = ["RunPredictions", "outputs_and_metrics", "run_predictions", "split_data"]
