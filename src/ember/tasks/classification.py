"""Classification: cross-entropy (with label smoothing and soft targets); accuracy, top-k, macro F1, ECE and
per-class accuracy from :func:`ember.metrics.classification_metrics`."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ember.tasks.base import LossMean, registry, split_batch


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
