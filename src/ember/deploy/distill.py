"""Knowledge distillation: train a smaller student on a teacher's softened outputs, with the normal Trainer.

Distillation is a task, not a second training loop: :class:`DistillationTask` runs the (frozen)
teacher inside ``forward`` and asks the run's task for its ``distill_loss``; a classifier's mixes
Hinton et al.'s KD loss with cross-entropy on the labels::

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)

(``T^2`` keeps the soft term's gradients on the scale of the hard term's as ``T`` grows.) In
evaluation the teacher is skipped and the student is scored like any classifier, so validation
metrics, checkpoints and the run store work as they do for every run.

Example:
    >>> import torch, tempfile
    >>> from torch import nn
    >>> X, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    >>> teacher = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    >>> student = distill(teacher, nn.Linear(8, 3), (X, y), (X, y), temperature=2.0, alpha=0.5,
    ...                   epochs=1, batch_size=16, runs_dir=tempfile.mkdtemp(), progress=False)
    >>> student(X).shape
    torch.Size([64, 3])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ember._registry import accepted_kwargs
from ember.tasks import contract
from ember.tasks.classification import Classification


class DistillationTask:
    """A task whose training loss distills ``teacher`` into the model being trained.

    The run's own task does the forward pass and the evaluation; while training, the teacher's
    outputs on the same batch go with the target to the task's ``distill_loss``
    (`ember.tasks.contract`): Hinton's KD loss for a classifier, per token for a language model, per
    pixel for a segmenter, a mix of squared errors for regression.

    Args:
        teacher: the trained model; kept frozen in eval mode.
        task: the run's task (default: classification with ``label_smoothing``).
        temperature: softening T > 0 of both distributions (2-8 typical), for tasks that soften.
        alpha: weight of the soft (teacher) term in [0, 1]; the labels get ``1 - alpha``.
        label_smoothing: of the default classification task.
    """

    def __init__(
        self,
        teacher: nn.Module,
        *,
        task: Any = None,
        temperature: float = 4.0,
        alpha: float = 0.9,
        label_smoothing: float = 0.0,
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha weighs the teacher's term and must be in [0, 1], got {alpha}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature = temperature
        self.alpha = alpha
        self.task = task if task is not None else Classification(label_smoothing=label_smoothing)
        contract.require(self.task, "distill_loss", "distillation", "compress it with int8 or prune instead")
        self.headline = self.task.headline
        self.mode = self.task.mode
        self._device: torch.device | None = None

    def forward(self, model: nn.Module, batch: Any) -> tuple[Any, Any]:
        """(student outputs, target); while training the target also carries the teacher's outputs."""
        out, target = self.task.forward(model, batch)
        if not model.training:
            return out, target
        device = next(model.parameters()).device
        if device != self._device:
            self.teacher.to(device)  # follow the student to the Trainer's device
            self._device = device
        with torch.no_grad():
            taught, _ = self.task.forward(self.teacher, batch)
        return out, _Taught(target, taught)

    def loss(self, output: Any, target: Any) -> torch.Tensor:
        if isinstance(target, _Taught):
            own = self.task.distill_loss
            options = {"temperature": self.temperature, "alpha": self.alpha}
            takes = accepted_kwargs(own)
            kwargs = {k: v for k, v in options.items() if takes is None or k in takes}
            return own(output, target.teacher, target.target, **kwargs)
        return self.task.loss(output, target)

    def evaluation(self) -> Any:
        return self.task.evaluation()

    def __getattr__(self, name: str) -> Any:  # the rest of the contract is the run's task's
        if name == "task":
            raise AttributeError(name)
        return getattr(self.task, name)


@dataclass(frozen=True)
class _Taught:
    """A training batch's target and the teacher's outputs on it."""

    target: Any
    teacher: Any


def distill(
    teacher: nn.Module,
    student: nn.Module,
    train_data: Any,
    val_data: Any = None,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
    **trainer_options: Any,
) -> nn.Module:
    """Train ``student`` to imitate ``teacher`` with :class:`ember.Trainer` and a :class:`DistillationTask`.

    Args:
        teacher: the trained model (not changed).
        student: the (smaller) model to train, in place.
        train_data: anything ``Trainer.fit`` takes: a Dataset, DataLoader or ``(X, y)`` tensors.
        val_data: the same kinds, or None.
        temperature: softening T of the KD term.
        alpha: weight of the KD term; ``1 - alpha`` goes to cross-entropy with the labels.
        **trainer_options: ``ember.Trainer`` options (lr, epochs, batch_size, runs_dir, config ...).

    Returns:
        The trained student (the run, with its metrics and checkpoints, is in the run store).
    """
    from ember.train.trainer import Trainer

    trainer_options.setdefault("name", f"distill-{type(student).__name__}")
    task = DistillationTask(teacher, temperature=temperature, alpha=alpha)
    trainer = Trainer(student, task=task, **trainer_options)
    trainer.fit(train_data, val_data)
    return student


__all__ = ["DistillationTask", "distill"]
