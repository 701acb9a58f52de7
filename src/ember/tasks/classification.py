"""Classification: cross-entropy (with label smoothing and soft targets); accuracy, top-k, macro F1, ECE and
per-class accuracy from :func:`ember.metrics.classification_metrics`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ember.tasks.base import LossMean, registry, split_batch
from ember.tasks.spec import ModelSpec

if TYPE_CHECKING:  # the evaluation stage's pieces load when a stage asks, not with `import ember`
    from ember.metrics.statistics import BaselineEvidence, Evidence
    from ember.tasks.items import ReportItem


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

    def evidence(
        self, evaluation: ClassificationEvaluation, data: Any, *, n_resamples: int = 1000
    ) -> Evidence:
        """The metrics over examples; AUROC without an interval when examples x classes x resamples
        is over :data:`AUROC_BUDGET` (its statistic sorts every class in every resample)."""
        from ember.metrics.statistics import Evidence, classification_statistics

        logits, target = evaluation.kept()
        probs, y = _probabilities(logits), _labels(target)
        affordable = probs.size * n_resamples <= AUROC_BUDGET
        stats = classification_statistics(probs, y, top_k=self.top_k, with_auroc=affordable)
        points, note = _auroc_point(probs, y, affordable)
        return Evidence(stats, len(y), "examples", note, points, correct=probs.argmax(axis=1) == y)

    def baselines(
        self, train: Any, data: Any, evaluation: ClassificationEvaluation, spec: ModelSpec, *, seed: int = 0,
        n_resamples: int = 1000,
    ) -> list[BaselineEvidence]:  # fmt: skip
        """The majority class and logistic regression (on a table also gradient boosting), fitted on
        ``train``, on the evaluated examples."""
        from ember.metrics import baselines as B
        from ember.metrics.statistics import BaselineEvidence, classification_statistics

        logits, target = evaluation.kept()
        y, (n, k) = _labels(target), logits.shape
        affordable = n * k * n_resamples <= AUROC_BUDGET
        encoder = spec.row_encoder()  # a table: logistic regression and boosting, each fed its way
        classical = (
            B.table_baselines(train, data, encoder, num_classes=k, seed=seed)
            if encoder is not None
            else [B.logistic_regression(train, data, num_classes=k, seed=seed)]
        )
        out = []
        for base in (B.majority_class(B.as_arrays(train)[1], n, num_classes=k), *classical):
            probs = _probabilities(base.outputs)
            stats = classification_statistics(probs, y, top_k=self.top_k, with_auroc=affordable)
            out.append(
                BaselineEvidence(base.name, base.description, stats, _auroc_point(probs, y, affordable)[0])
            )
        return out

    def report_items(
        self, evaluation: ClassificationEvaluation, data: Any, spec: ModelSpec, *, limit: int = 12
    ) -> list[ReportItem]:
        """The confusion matrix (and per-class figures), the reliability diagram, and the most
        confident mistakes."""
        from ember.tasks import items

        logits, target = evaluation.kept()
        y, k = torch.as_tensor(_labels(target)), logits.shape[1]
        probs = logits.double().softmax(dim=1)
        conf, pred = probs.max(dim=1)
        names = _names(spec, k)
        matrix = torch.bincount(y * k + pred, minlength=k * k).view(k, k).numpy()
        shown: list[ReportItem] = [
            items.Confusion(
                matrix, names, note="rows: true class; colour: share of the row; numbers: counts."
            ),
            items.Calibration(logits, y),
        ]
        wrong = torch.nonzero(pred != y).flatten()
        if len(wrong) == 0:
            return [*shown, items.Table([], [], note="no mistakes on this split")]
        order = wrong[conf[wrong].argsort(descending=True)][:limit].tolist()
        return shown + items.examples(
            data, spec.inputs.kind, order,
            captions=[f"#{i} true {names[int(y[i])]}\npred {names[int(pred[i])]} ({float(conf[i]):.2f})" for i in order],
            headers=["example", "true", "predicted", "confidence", "p(true)"],
            rows=[[i, names[int(y[i])], names[int(pred[i])], float(conf[i]), float(probs[i, y[i]])] for i in order],
            note=f"the {len(order)} most confident of {len(wrong)} mistakes; example = index in the evaluated split",
            numeric=(0, 3, 4),
        )  # fmt: skip

    def human_texts(self, evaluation: ClassificationEvaluation, spec: ModelSpec) -> list[dict[str, str]]:
        """``"<class> (<confidence>%)"`` per example, the true class as its reference."""
        logits, target = evaluation.kept()
        conf, pred = logits.float().softmax(dim=1).max(dim=1)
        names, y = _names(spec, logits.shape[1]), _labels(target)
        return [
            {"output": f"{names[int(p)]} ({float(c):.0%})", "reference": names[int(t)]}
            for p, c, t in zip(pred, conf, y)
        ]

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


AUROC_BUDGET = 5e7
"""Examples x classes x resamples above which AUROC gets no interval (its cost: seconds)."""


def _probabilities(logits: torch.Tensor) -> np.ndarray:
    return logits.double().softmax(dim=1).numpy()


def _labels(target: torch.Tensor) -> np.ndarray:
    """Class ids of hard (N,) or soft (N, K) targets."""
    return (target.argmax(dim=1) if target.ndim == 2 else target).numpy().astype(np.int64)


def _auroc_point(probs: np.ndarray, y: np.ndarray, affordable: bool) -> tuple[dict[str, float], str]:
    from ember.metrics.statistics import classification_statistics

    if affordable:
        return {}, ""
    whole = classification_statistics(probs, y, with_auroc=True)(np.ones((1, len(y))))
    note = "AUROC is shown without an interval: examples x classes x resamples is over its budget"
    return {"auroc": float(whole["auroc"][0])}, note


def _names(spec: ModelSpec, k: int) -> list[str]:
    names = spec.classes or []
    return [names[i] if i < len(names) else str(i) for i in range(k)]


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

    def kept(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (N, K), targets)`` of the pass so far, in order."""
        if not self.logits:
            raise ValueError("the evaluation saw no examples")
        return torch.cat(self.logits), torch.cat(self.targets)

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
