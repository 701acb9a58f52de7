"""Regression: MSE loss; MSE, MAE and R² from :func:`ember.metrics.regression_metrics`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ember.tasks.base import LossMean, registry, split_batch
from ember.tasks.spec import ModelSpec

if TYPE_CHECKING:  # the evaluation stage's pieces load when a stage asks, not with `import ember`
    from ember.metrics.statistics import BaselineEvidence, Evidence
    from ember.tasks.items import ReportItem


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

    # ------------------------------------------------------------------ lifecycle (tasks.contract)

    def evidence(self, evaluation: RegressionEvaluation, data: Any, *, n_resamples: int = 1000) -> Evidence:
        """``mse``, ``mae`` and ``r2`` over examples."""
        from ember.metrics.statistics import Evidence, regression_statistics

        pred, target = evaluation.kept()
        return Evidence(regression_statistics(pred.double().numpy(), target.double().numpy()), len(target))

    def baselines(
        self, train: Any, data: Any, evaluation: RegressionEvaluation, spec: ModelSpec, *, seed: int = 0,
        n_resamples: int = 1000,
    ) -> list[BaselineEvidence]:  # fmt: skip
        """The training mean and gradient boosting, fitted on ``train``, on the evaluated examples."""
        from ember.metrics import baselines as B
        from ember.metrics.statistics import BaselineEvidence, regression_statistics

        _, target = evaluation.kept()
        truth = target.double().numpy()
        encoder = spec.row_encoder()  # a table: boosting with native categories
        classical = (
            B.table_baselines(train, data, encoder, num_classes=None, seed=seed)
            if encoder is not None
            else [B.gradient_boosting(train, data, seed=seed)]
        )
        return [
            BaselineEvidence(b.name, b.description, regression_statistics(b.outputs.double().numpy(), truth))
            for b in (B.mean_value(B.as_arrays(train)[1], len(target)), *classical)
        ]

    def report_items(
        self, evaluation: RegressionEvaluation, data: Any, spec: ModelSpec, *, limit: int = 12
    ) -> list[ReportItem]:
        """Predictions against the truth (first output), and the largest errors."""
        from ember.tasks import items

        pred, target = evaluation.kept()
        first = lambda t: t.reshape(len(t), -1)[:, 0].double().numpy()  # noqa: E731
        scatter = items.Scatter(
            first(target), first(pred), title="Predicted against true (first output)", xlabel="true",
            ylabel="predicted", note="on the diagonal: exact predictions.", heading="Predicted against true",
        )  # fmt: skip
        err = (pred.double() - target.double()).reshape(len(pred), -1).abs().mean(dim=1)
        order = err.argsort(descending=True)[:limit].tolist()
        return [scatter] + items.examples(
            data, spec.inputs.kind, order,
            captions=[f"#{i} error {float(err[i]):.3g}" for i in order],
            headers=["example", "true", "predicted", "|error|"],
            rows=[[i, items.short(target[i]), items.short(pred[i]), float(err[i])] for i in order],
            note=f"the {len(order)} largest errors; example = index in the evaluated split", numeric=(0, 3),
        )  # fmt: skip

    def human_texts(self, evaluation: RegressionEvaluation, spec: ModelSpec) -> list[dict[str, str]]:
        """The predicted values per example, the true values as its reference."""
        pred, target = evaluation.kept()
        text = lambda row: ", ".join(f"{float(v):.4g}" for v in row)  # noqa: E731
        return [
            {"output": text(p), "reference": text(t)}
            for p, t in zip(pred.reshape(len(pred), -1), target.reshape(len(target), -1))
        ]

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

    def kept(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(predictions, targets)`` of the pass so far, in order."""
        if not self.outputs:
            raise ValueError("the evaluation saw no examples")
        return torch.cat(self.outputs), torch.cat(self.targets)

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
