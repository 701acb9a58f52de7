"""Knowledge distillation: train a smaller student on a teacher's softened outputs, with the normal Trainer.

Distillation is a task, not a second training loop: :class:`DistillationTask` runs the (frozen)
teacher inside ``forward`` and mixes Hinton et al.'s KD loss with cross-entropy on the labels::

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

from typing import Any, Literal

import torch
from torch import nn

from ember.tasks.base import split_batch
from ember.tasks.classification import Classification, ClassificationEvaluation, kd_loss


class DistillationTask:
    """A classification task whose training loss distills ``teacher`` into the model being trained.

    Args:
        teacher: the trained model; kept frozen in eval mode.
        temperature: softening T > 0 of both distributions (2-8 typical).
        alpha: weight of the soft (teacher) term in [0, 1]; the labels get ``1 - alpha``.
        label_smoothing: for the hard term and for evaluation.
    """

    headline = "accuracy"
    mode: Literal["max", "min"] = "max"

    def __init__(
        self,
        teacher: nn.Module,
        *,
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
        self.classification = Classification(label_smoothing=label_smoothing)
        self._device: torch.device | None = None

    def forward(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, Any]:
        """(student logits, target); while training the target also carries the teacher's logits."""
        inputs, target = split_batch(batch)
        logits = model(inputs)
        if not model.training:
            return logits, target
        if isinstance(inputs, torch.Tensor) and inputs.device != self._device:
            self.teacher.to(inputs.device)  # follow the student to the Trainer's device
            self._device = inputs.device
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        return logits, (target, teacher_logits)

    def loss(self, output: torch.Tensor, target: Any) -> torch.Tensor:
        if isinstance(target, tuple):
            labels, teacher_logits = target
            return kd_loss(
                output,
                teacher_logits,
                labels,
                temperature=self.temperature,
                alpha=self.alpha,
                label_smoothing=self.classification.label_smoothing,
            )
        return self.classification.loss(output, target)

    def evaluation(self) -> ClassificationEvaluation:
        return self.classification.evaluation()


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


__all__ = ["DistillationTask", "distill", "kd_loss"]
