"""Regression: MSE loss; MSE, MAE and R² from :func:`ember.metrics.regression_metrics`."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ember.tasks.base import LossMean, registry, split_batch


class Regression:
    """Real-valued targets of shape (B,) or (B, D); the model outputs the same shape (or (B, 1)).

    Example:
        >>> task = Regression()
        >>> y = torch.tensor([1.0, 2.0, 3.0])
        >>> ev = task.evaluation(); ev.update(y, y, task.loss(y, y)); ev.compute()["r2"]
        1.0
    """

    headline = "mse"
    mode: Literal["max", "min"] = "min"
    checks = ("overfitting", "leakage", "shift")

    def forward(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, target = split_batch(batch)
        output = model(inputs)
        if output.ndim == 2 and output.shape[1] == 1 and target.ndim == 1:
            output = output.squeeze(1)
        return output, target

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output.float(), target.float())

    def evaluation(self) -> RegressionEvaluation:
        return RegressionEvaluation()

    def distill_loss(
        self, student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.5
    ) -> torch.Tensor:
        """``alpha`` x squared error to the teacher's outputs + ``1 - alpha`` x squared error to the targets."""
        student = (
            student.float().reshape(target.shape) if student.numel() == target.numel() else student.float()
        )
        teacher = teacher.float().reshape(student.shape)
        return alpha * F.mse_loss(student, teacher) + (1.0 - alpha) * F.mse_loss(student, target.float())


class RegressionEvaluation:
    def __init__(self) -> None:
        self.outputs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.loss = LossMean()

    def update(self, output: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None:
        self.outputs.append(output.detach().float().cpu())
        self.targets.append(target.detach().float().cpu())
        self.loss.update(loss, output.shape[0])

    def compute(self) -> dict[str, float]:
        from ember.metrics import regression_metrics  # torchmetrics, loaded at the first evaluation

        return {
            "loss": self.loss.compute(),
            **regression_metrics(torch.cat(self.outputs), torch.cat(self.targets)),
        }


@registry.register("regression")
def regression() -> Regression:
    """Mean-squared-error regression (see :class:`Regression`)."""
    return Regression()
