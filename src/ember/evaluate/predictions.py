"""A finished run's evaluation pass on one of its splits (or on given arrays): what every later
evaluation step reads.

Everything downstream (intervals, baselines, paired tests, the report, rating sheets) starts here.
The run comes back through :func:`ember.recipe.load_run`, so a recipe run and a run trained from
Python (``ember.Trainer(...).fit(...)``) are read alike. The pass is the loop's own
(:func:`ember.train.loop.evaluate_pass`), so the metrics ``ember eval`` prints are the ones training
logged for the same weights and split; its evaluation is made with ``keep`` (see
``ember.tasks.contract.evaluation``), so it also holds what the task's evidence, baselines and
report items read.

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
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ember.data import ArrayData, make_loader
from ember.recipe import LoadedRun, final_task, load_run
from ember.tasks import contract
from ember.tasks.base import Task
from ember.tasks.spec import ModelSpec
from ember.track import RunRecord
from ember.train.loop import computed, evaluate_pass
from ember.train.precision import resolve_device, resolve_precision


@dataclass
class RunPredictions:
    """One run's final model, evaluated on one split.

    Attributes:
        run: the run (`ember.recipe.LoadedRun`): spec, model, task, splits, store.
        task: the task as it scored the split (a translation task's final beam search).
        split: ``train``, ``val`` or ``test``, or the name of the arrays file it was evaluated on.
        data: the evaluated data, in the order the pass read it.
        evaluation: the task's evaluation of the pass, made with ``keep``.
        metrics: the task's metrics of the pass (loss included), as ``evaluate`` returns them.
    """

    run: LoadedRun
    task: Task
    split: str
    data: Any
    evaluation: Any
    metrics: dict[str, float]

    @property
    def record(self) -> RunRecord:
        return self.run.record

    @property
    def spec(self) -> ModelSpec:
        return self.run.spec

    @property
    def task_name(self) -> str:
        return self.run.spec.task

    @property
    def train_data(self) -> Any:
        """The run's training split (what baselines are fitted on); ValueError when it kept none."""
        return self.run.split("train")

    @property
    def outputs(self) -> torch.Tensor:
        """The model's outputs in data order when the evaluation keeps them as one tensor
        (``kept()``: classification logits, regression predictions), else an empty tensor."""
        return self._kept()[0]

    @property
    def targets(self) -> torch.Tensor:
        """The targets beside :attr:`outputs` (empty when they are not kept)."""
        return self._kept()[1]

    def _kept(self) -> tuple[torch.Tensor, torch.Tensor]:
        kept = getattr(self.evaluation, "kept", None)
        if not callable(kept):
            return torch.empty(0), torch.empty(0)
        outputs, targets = kept()
        return outputs, targets

    @property
    def classes(self) -> list[str] | None:
        return self.run.classes

    @property
    def num_classes(self) -> int | None:
        return self.run.num_classes


def run_predictions(
    ref: str, split: str = "test", *, runs_dir: str | Path | None = None, data: str | Path | None = None
) -> RunPredictions:
    """Rebuild run ``ref`` (id, unique prefix or ``latest``) and evaluate it on ``split``, or on the
    ``x`` / ``y`` arrays of the ``.npz`` file ``data``.

    Raises:
        ValueError: the run has no such split (the message names the splits it has, and why one is
            missing), or the arrays do not fit the model.
        FileNotFoundError: the run has no final weights (it failed or is still running).
    """
    run = load_run(ref, runs_dir=runs_dir)
    if data is not None:
        evaluated: Any = arrays_file(data, run.spec)
        split = Path(data).name
    else:
        evaluated = run.eval_split(split)
    # a translation task decodes every pair with its final beam, as the test figures were made
    task = final_task(run.task)
    evaluation, metrics = evaluation_pass(run, evaluated, task)
    return RunPredictions(run, task, split, evaluated, evaluation, metrics)


def evaluation_pass(run: LoadedRun, data: Any, task: Task) -> tuple[Any, dict[str, float]]:
    """The run's model over ``data`` (a dataset, ``(x, y)`` tensors or a ready loader used as is),
    with the device, precision and batch size of the run's config: the evaluation (kept) and its metrics."""
    cfg = run.config
    dev = resolve_device(cfg.trainer.device)
    loader = (
        data
        if isinstance(data, DataLoader)
        else make_loader(
            data if not isinstance(data, tuple) else ArrayData(*data),
            batch_size=cfg.data.eval_batch_size,
            shuffle=False,
            num_workers=cfg.data.num_workers,
            device=dev,
        )
    )
    evaluation = evaluate_pass(
        run.model.to(dev), loader, task, evaluation=contract.evaluation(task, keep=True), device=dev,
        precision=resolve_precision(cfg.trainer.precision, dev),
    )  # fmt: skip
    return evaluation, computed(evaluation)


def arrays_file(path: str | Path, spec: ModelSpec) -> ArrayData:
    """The ``x`` and ``y`` arrays of an ``.npz`` file as data for a model of ``spec``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: no ``x`` or ``y``, or ``x`` does not have the model's input shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with np.load(path, allow_pickle=False) as arrays:
        missing = [k for k in ("x", "y") if k not in arrays.files]
        if missing:
            raise ValueError(
                f"{path} has no array {' or '.join(repr(k) for k in missing)} (it holds: "
                f"{', '.join(arrays.files) or 'nothing'}); save inputs as x and targets as y: np.savez(path, x=..., y=...)"
            )
        x, y = arrays["x"], arrays["y"]
    want = tuple(spec.inputs.shape)
    if tuple(x.shape[1:]) != want or len(y) != len(x):
        raise ValueError(
            f"{path}: x is {x.shape} and y {y.shape}; the run's model takes inputs of shape (N, "
            f"{', '.join(map(str, want))}) with one target row per input"
        )
    inputs = torch.from_numpy(x).to(spec.inputs.torch_dtype)
    targets = torch.from_numpy(y)
    targets = targets.long() if not targets.is_floating_point() else targets.float()
    return ArrayData(inputs, targets)


__all__ = ["RunPredictions", "arrays_file", "evaluation_pass", "run_predictions"]
