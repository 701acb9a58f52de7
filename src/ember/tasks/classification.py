"""Classification: cross-entropy (with label smoothing and soft targets); accuracy, top-k, macro F1, ECE and
per-class accuracy from :func:`ember.metrics.classification_metrics`."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ember.tasks.base import LossMean, registry, split_batch
from ember.tasks.spec import ModelSpec


class Classification:
    """Single-label classification over ``num_classes`` logits.

    Args:
        label_smoothing: mass moved from the true class to all classes (0 disables).
        top_k: also report top-k accuracy for this k when there are more than k classes.

    Example:
        >>> task = Classification(label_smoothing=0.1)
        >>> logits, y = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
        >>> ev = task.evaluation(); ev.update(logits, y, task.loss(logits, y)); ev.compute()["accuracy"]
        0.5
    """

    headline = "accuracy"
    mode: Literal["max", "min"] = "max"
    checks = ("overfitting", "leakage", "shift", "imbalance")

    def __init__(self, *, label_smoothing: float = 0.0, top_k: int = 5) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self.top_k = top_k

    def forward(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, target = split_batch(batch)
        return model(inputs), target

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # (B, K) logits; target (B,) class ids or (B, K) probabilities (mixup/cutmix)
        if output.dtype != torch.float32:  # bf16/fp16 logits: the loss in fp32
            output = output.float()
        return F.cross_entropy(output, target, label_smoothing=self.label_smoothing)

    def evaluation(self) -> ClassificationEvaluation:
        return ClassificationEvaluation(self.top_k)

    # ------------------------------------------------------------------ lifecycle (tasks.contract)

    def decode(self, outputs: torch.Tensor, spec: ModelSpec) -> dict[str, Any]:
        """Per item: the logits (``outputs``), the predicted index and its class name."""
        logits = outputs.detach().float().cpu()
        picked = logits.argmax(1).tolist() if logits.ndim == 2 else []
        names = spec.classes or []
        return {
            # orjson writes numpy rows directly; the server slices them per request
            "outputs": np.ascontiguousarray(logits.numpy()),
            "predictions": picked,
            "labels": [names[i] if i < len(names) else str(i) for i in picked],
        }

    def distill_loss(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        target: torch.Tensor,
        *,
        temperature: float = 4.0,
        alpha: float = 0.9,
    ) -> torch.Tensor:
        """Hinton's distillation loss (:func:`kd_loss`) with this task's label smoothing."""
        return kd_loss(
            student,
            teacher,
            target,
            temperature=temperature,
            alpha=alpha,
            label_smoothing=self.label_smoothing,
        )


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Hinton et al.'s distillation loss on (..., K) logits, (...) targets::

        alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)

    (``T^2`` keeps the soft term's gradients on the scale of the hard term's as ``T`` grows.)
    Targets equal to -100 are not scored (language models, translation).

    Example:
        >>> z = torch.tensor([[2.0, 0.0]])
        >>> float(kd_loss(z, z, torch.tensor([0]), temperature=2.0, alpha=1.0))
        0.0
    """
    student, teacher = student.float().flatten(0, -2), teacher.float().flatten(0, -2)
    target = target.flatten() if target.ndim > 1 and target.dtype == torch.long else target
    hard = F.cross_entropy(student, target, label_smoothing=label_smoothing, ignore_index=-100)
    if alpha == 0.0:
        return hard
    keep = target != -100 if target.dtype == torch.long else torch.ones(len(student), dtype=torch.bool)
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student[keep] / t, dim=-1),
        F.log_softmax(teacher[keep] / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * t * t * soft + (1.0 - alpha) * hard


class ClassificationEvaluation:
    """Keeps logits and targets of one pass (needed later for CIs, calibration and reports)."""

    def __init__(self, top_k: int) -> None:
        self.top_k = top_k
        self.logits: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.loss = LossMean()

    def update(self, output: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None:
        self.logits.append(output.detach().float().cpu())
        self.targets.append(target.detach().cpu())
        self.loss.update(loss, output.shape[0])

    def compute(self) -> dict[str, float]:
        # the metrics live in ember.metrics (over torchmetrics), imported at the first
        # evaluation rather than by `import ember`; training steps never touch them
        from ember.metrics import classification_metrics

        logits, target = torch.cat(self.logits), torch.cat(self.targets)
        return {"loss": self.loss.compute(), **classification_metrics(logits, target, top_k=self.top_k)}


@registry.register("classification")
def classification(*, label_smoothing: float = 0.0, top_k: int = 5) -> Classification:
    """Cross-entropy classification (see :class:`Classification`)."""
    return Classification(label_smoothing=label_smoothing, top_k=top_k)
