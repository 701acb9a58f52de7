"""Semantic segmentation: per-pixel cross-entropy (+ optional soft Dice) and mean IoU.

Batches are ``(images, masks)``: ``images`` ``(B, C, H, W)``, ``masks`` int64 ``(B, H, W)`` of class
ids (``digit-segments`` gives 0 for background and 1..10 for the digits); the model returns
``(B, K, H, W)`` logits.

Metrics, from a running confusion matrix kept by torchmetrics' ``MulticlassJaccardIndex``:
``miou`` (the headline) is the mean IoU over the classes that occur in the truth or the predictions
of the pass, background included as in Pascal VOC; ``miou_fg`` leaves class 0 (background) out;
``pixel_accuracy``; and ``iou/class_k`` for every class that occurs. A class absent from both truth
and predictions has no defined IoU and is left out of the means (scikit-learn's ``jaccard_score``
with ``average="macro"`` does the same over the labels it sees).

Example:
    >>> import torch
    >>> task = Segmentation()
    >>> logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 2.0]]]])  # (1, 2, 1, 2): predicts [0, 1]
    >>> mask = torch.tensor([[[0, 0]]])
    >>> ev = task.evaluation(); ev.update(logits, mask, task.loss(logits, mask)); ev.compute()["miou"]
    0.25
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ember.tasks.base import LossMean, registry, split_batch
from ember.tasks.classification import kd_loss
from ember.tasks.spec import ModelSpec

if TYPE_CHECKING:  # the evaluation stage's pieces load when a stage asks, not with `import ember`
    from ember.metrics.statistics import BaselineEvidence, Evidence
    from ember.tasks.items import ReportItem

__all__ = ["Segmentation", "SegmentationEvaluation", "dice_loss"]


def dice_loss(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1.0
) -> torch.Tensor:
    """1 - mean soft Dice over the classes present in ``target``.

    Args:
        logits: (B, K, H, W).
        target: (B, H, W) class ids in [0, K) wherever ``valid``.
        valid: (B, H, W) bool, pixels that count (default: all).
        eps: smoothing added to numerator and denominator.
    """
    probs = logits.float().softmax(dim=1)
    keep = torch.ones_like(target, dtype=torch.bool) if valid is None else valid
    onehot = F.one_hot(torch.where(keep, target, 0), probs.shape[1]).movedim(-1, 1).float()  # (B, K, H, W)
    weight = keep[:, None].float()
    probs, onehot = probs * weight, onehot * weight
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    total = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    present = onehot.sum(dim=(0, 2, 3)) > 0
    dice = (2 * inter + eps) / (total + eps)
    return 1 - dice[present].mean()


class Segmentation:
    """Per-pixel classification into ``K`` classes (the model's output channels).

    Args:
        dice_weight: weight of the soft Dice loss added to cross-entropy (0: cross-entropy only).
        background_weight: weight of class 0 in the cross-entropy (the others weigh 1). Below 1 it
            keeps a vast background from drowning the classes of thin foreground: on digit scenes
            (~9% foreground) 0.1 learns the digit classes many times faster than 1.
        ignore_index: a mask value that is neither trained nor scored (-100: none in practice).

    Example:
        >>> logits, mask = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
        >>> bool(Segmentation(dice_weight=1.0).loss(logits, mask) > 0)
        True
    """

    headline = "miou"
    mode: Literal["max", "min"] = "max"
    checks = ("overfitting", "leakage", "shift")
    instead = {
        "check.imbalance": "its labels are per pixel; `ember report` shows every class's IoU and pixels"
    }

    def __init__(
        self, *, dice_weight: float = 0.0, background_weight: float = 1.0, ignore_index: int = -100
    ) -> None:
        if dice_weight < 0 or background_weight <= 0:
            raise ValueError(
                f"dice_weight must be >= 0 and background_weight > 0; got {dice_weight} and {background_weight}"
            )
        self.dice_weight, self.background_weight, self.ignore_index = (
            dice_weight,
            background_weight,
            ignore_index,
        )

    def forward(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        images, mask = split_batch(batch)
        return model(images), mask

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # (B, K, H, W) logits, (B, H, W) class ids
        logits = output.float()
        weight = None
        if self.background_weight != 1.0:
            weight = torch.ones(logits.shape[1], device=logits.device)
            weight[0] = self.background_weight
        loss = F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index)
        if self.dice_weight:
            loss = loss + self.dice_weight * dice_loss(output, target, target != self.ignore_index)
        return loss

    def evaluation(self, *, keep: bool = False) -> SegmentationEvaluation:
        """A running IoU; ``keep`` also keeps every image's confusion matrix."""
        return SegmentationEvaluation(ignore_index=self.ignore_index, keep=keep)

    # ------------------------------------------------------------------ lifecycle (tasks.contract)

    def decode(self, outputs: torch.Tensor, spec: ModelSpec) -> dict[str, Any]:
        """Per image: the (H, W) map of predicted class indices, as nested lists."""
        return {"masks": outputs.detach().argmax(dim=1).to(torch.int16).cpu().numpy()}

    def evidence(self, evaluation: SegmentationEvaluation, data: Any, *, n_resamples: int = 1000) -> Evidence:
        """Every image's confusion matrix as :class:`Evidence` over images (`ember.metrics.segmentation`)."""
        from ember.metrics.segmentation import segmentation_evidence

        return segmentation_evidence(evaluation.per_image())

    def baselines(
        self, train: Any, data: Any, evaluation: SegmentationEvaluation, spec: ModelSpec, *, seed: int = 0,
        n_resamples: int = 1000, max_train: int = 2000,
    ) -> list[BaselineEvidence]:  # fmt: skip
        """``majority`` and ``components`` on the evaluated images, fitted on at most ``max_train``
        training images (a seeded random subset)."""
        from ember.metrics import components
        from ember.metrics.segmentation import segmentation_baselines

        k = int(evaluation.per_image().shape[1])
        fit = [(x, np.asarray(m)) for x, m in components.items(train, limit=max_train, seed=seed)]
        evaluated = [(x, np.asarray(m)) for x, m in components.items(data)]
        return segmentation_baselines(
            fit, evaluated, num_classes=k, ignore_index=self.ignore_index, classes=spec.classes
        )

    def report_items(
        self, evaluation: SegmentationEvaluation, data: Any, spec: ModelSpec
    ) -> list[ReportItem]:
        """The pixels' confusion matrix, with each class's precision, recall, F1 and IoU."""
        from ember.tasks import items

        matrix = evaluation.per_image().sum(axis=0)
        names = spec.classes or []
        classes = [names[i] if i < len(names) else str(i) for i in range(len(matrix))]
        note = "pixels of the split: rows true class, columns predicted; colour: share of the row."
        return [items.Confusion(matrix, classes, unit="pixels", iou=True, note=note)]

    def distill_loss(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        target: torch.Tensor,
        *,
        temperature: float = 4.0,
        alpha: float = 0.9,
    ) -> torch.Tensor:
        """Hinton's distillation loss per pixel: (B, K, H, W) logits become (B * H * W, K) rows."""
        rows = lambda z: z.movedim(1, -1).flatten(0, -2)  # noqa: E731
        labels = target.flatten().masked_fill(target.flatten() == self.ignore_index, -100)
        return kd_loss(rows(student), rows(teacher), labels, temperature=temperature, alpha=alpha)


class SegmentationEvaluation:
    """Running per-class IoU over one pass (torchmetrics' confusion matrix; see the module docstring)."""

    def __init__(self, *, ignore_index: int = -100, keep: bool = False) -> None:
        self.ignore_index = ignore_index
        self.metric: Any = None  # built at the first batch, when the number of classes is known
        self.loss = LossMean()
        self.image_counts: Any = None
        if keep:
            from ember.metrics.segmentation import ConfusionPerImage

            self.image_counts = ConfusionPerImage(ignore_index=ignore_index)

    def per_image(self) -> np.ndarray:
        """``(N, K, K)`` truth x prediction pixel counts of every image (an evaluation made with ``keep``)."""
        if self.image_counts is None:
            raise ValueError("this evaluation kept no per-image counts: make it with evaluation(keep=True)")
        return self.image_counts.result()

    def update(self, output: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None:
        if self.metric is None:
            from torchmetrics.classification import MulticlassJaccardIndex

            self.metric = MulticlassJaccardIndex(
                output.shape[1], average="none", zero_division=math.nan, validate_args=False
            ).to(output.device)
        if self.image_counts is not None:
            self.image_counts.update(output, target)
        pred = output.argmax(dim=1)
        keep = target != self.ignore_index
        self.metric.update(pred[keep], target[keep])
        self.loss.update(loss, output.shape[0])

    def compute(self) -> dict[str, float]:
        out = {"loss": self.loss.compute()}
        if self.metric is None:
            return out
        iou = self.metric.compute().double().cpu()  # (K,), NaN for classes never seen
        confmat = self.metric.confmat.double().cpu()  # (K, K) truth x prediction
        out["miou"] = float(iou.nanmean())
        out["miou_fg"] = float(iou[1:].nanmean()) if len(iou) > 1 else math.nan
        out["pixel_accuracy"] = float(confmat.diag().sum() / confmat.sum().clamp(min=1))
        out.update({f"iou/class_{k}": float(v) for k, v in enumerate(iou.tolist()) if not math.isnan(v)})
        return out


@registry.register("segmentation")
def segmentation(
    *, dice_weight: float = 0.0, background_weight: float = 1.0, ignore_index: int = -100
) -> Segmentation:
    """Semantic segmentation (see :class:`Segmentation`)."""
    return Segmentation(
        dice_weight=dice_weight, background_weight=background_weight, ignore_index=ignore_index
    )
