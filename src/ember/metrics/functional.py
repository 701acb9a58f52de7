"""Metrics as pure functions: tensors in, floats (or small tensors) out (exported by `ember.metrics`).

Each wraps the reference implementation where one exists: ``torchmetrics.functional`` for
classification, calibration, regression, perplexity and segmentation; sacrebleu for BLEU and chrF;
pycocotools' ``COCOeval`` for detection mAP (the engine behind torchmetrics' ``MeanAveragePrecision``,
called directly because that class also needs torchvision, which has no build for ember's torch).
The tests check every function against scikit-learn, sacrebleu, pycocotools or the plain PyTorch
computation on hand-made and random cases.

Conventions:

- ``logits``: ``(N, K)`` scores; softmax is applied where probabilities are needed, so log-probabilities
  work too. ``pred``: ``(N,)`` class ids. Functions named for scores take ``logits``, others take either
  (a floating ``(N, K)`` tensor is reduced with ``argmax``).
- ``target``: ``(N,)`` class ids; soft ``(N, K)`` targets are reduced with ``argmax``.
- ``macro`` averages over the classes present in ``target`` or the predictions (as scikit-learn and
  torchmetrics do); ``micro`` pools every example.

Example:
    >>> import torch
    >>> logits, y = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1, 1])
    >>> round(accuracy(logits, y), 4), round(f1(logits, y, average="macro"), 4)
    (0.6667, 0.6667)
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ember._io import require

Average = Literal["macro", "micro"]


def _tm() -> Any:
    """torchmetrics.functional, or an ImportError that says what to install."""
    return require("torchmetrics.functional", "metrics", what="ember's metrics")


def _targets(target: torch.Tensor) -> torch.Tensor:
    target = target.detach().cpu()
    return target.argmax(dim=1) if target.ndim == 2 else target.long()


def _preds(logits_or_pred: torch.Tensor) -> torch.Tensor:
    x = logits_or_pred.detach().cpu()
    return x.argmax(dim=1) if x.ndim == 2 else x.long()


def _num_classes(logits_or_pred: torch.Tensor, target: torch.Tensor, num_classes: int | None) -> int:
    if num_classes is not None:
        return num_classes
    if logits_or_pred.ndim == 2:
        return int(logits_or_pred.shape[1])
    return int(max(int(logits_or_pred.max()), int(_targets(target).max())) + 1)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes, in float32 on the CPU: ``(N, K) -> (N, K)``."""
    return logits.detach().float().cpu().softmax(dim=1)


# --------------------------------------------------------------------------- classification


def accuracy(logits_or_pred: torch.Tensor, target: torch.Tensor, *, num_classes: int | None = None) -> float:
    """Fraction of examples whose predicted class is the target (scikit-learn's ``accuracy_score``)."""
    k = _num_classes(logits_or_pred, target, num_classes)
    tm = _tm().classification
    return float(
        tm.multiclass_accuracy(_preds(logits_or_pred), _targets(target), num_classes=k, average="micro")
    )


def top_k_accuracy(logits: torch.Tensor, target: torch.Tensor, k: int) -> float:
    """Fraction of examples whose target is among the ``k`` highest scores (``top_k_accuracy_score``)."""
    tm = _tm().classification
    return float(
        tm.multiclass_accuracy(
            logits.detach().float().cpu(),
            _targets(target),
            num_classes=logits.shape[1],
            average="micro",
            top_k=k,
        )
    )


def precision(
    logits_or_pred: torch.Tensor,
    target: torch.Tensor,
    *,
    average: Average = "macro",
    num_classes: int | None = None,
) -> float:
    """Precision, ``macro`` or ``micro`` averaged (``precision_score`` with ``zero_division=0``)."""
    return float(_prf("precision", logits_or_pred, target, average, num_classes))


def recall(
    logits_or_pred: torch.Tensor,
    target: torch.Tensor,
    *,
    average: Average = "macro",
    num_classes: int | None = None,
) -> float:
    """Recall, ``macro`` or ``micro`` averaged (``recall_score`` with ``zero_division=0``)."""
    return float(_prf("recall", logits_or_pred, target, average, num_classes))


def f1(
    logits_or_pred: torch.Tensor,
    target: torch.Tensor,
    *,
    average: Average = "macro",
    num_classes: int | None = None,
) -> float:
    """F1, ``macro`` or ``micro`` averaged (``f1_score`` with ``zero_division=0``)."""
    return float(_prf("f1_score", logits_or_pred, target, average, num_classes))


def _prf(
    which: str, logits_or_pred: torch.Tensor, target: torch.Tensor, average: str, num_classes: int | None
) -> torch.Tensor:
    k = _num_classes(logits_or_pred, target, num_classes)
    fn = getattr(_tm().classification, f"multiclass_{which}")
    # averaged in float32, a perfect score can come out as 1.0000001: these are bounded by [0, 1]
    return fn(_preds(logits_or_pred), _targets(target), num_classes=k, average=average).clamp(0.0, 1.0)


def per_class(
    logits_or_pred: torch.Tensor, target: torch.Tensor, *, num_classes: int | None = None
) -> dict[str, torch.Tensor]:
    """Per-class ``precision``, ``recall``, ``f1`` (each ``(K,)``, 0 where undefined) and ``support``.

    Example:
        >>> table = per_class(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), num_classes=2)
        >>> table["recall"].tolist(), table["support"].tolist()
        ([0.5, 1.0], [2, 1])
    """
    k = _num_classes(logits_or_pred, target, num_classes)
    out = {name: _prf(fn, logits_or_pred, target, "none", k) for name, fn in _PER_CLASS.items()}
    out["support"] = torch.bincount(_targets(target), minlength=k)
    return out


_PER_CLASS = {"precision": "precision", "recall": "recall", "f1": "f1_score"}


def confusion_matrix(
    logits_or_pred: torch.Tensor, target: torch.Tensor, *, num_classes: int | None = None
) -> torch.Tensor:
    """``(K, K)`` counts: row = true class, column = predicted class (scikit-learn's layout)."""
    k = _num_classes(logits_or_pred, target, num_classes)
    return _tm().classification.multiclass_confusion_matrix(
        _preds(logits_or_pred), _targets(target), num_classes=k
    )


def auroc(logits: torch.Tensor, target: torch.Tensor) -> float:
    """One-vs-rest ROC AUC averaged over the classes present in ``target`` (binary AUC for K = 2).

    A class without positives (or without negatives) has no ROC curve; it is left out of the average
    rather than counted as 0, and NaN is returned when no class has both.
    """
    probs, y = probabilities(logits), _targets(target)
    k = probs.shape[1]
    counts = torch.bincount(y, minlength=k)
    valid = (counts > 0) & (counts < len(y))
    if not bool(valid.any()):
        return float("nan")
    tm = _tm().classification
    if k == 2:
        return float(tm.binary_auroc(probs[:, 1], y))
    with warnings.catch_warnings():  # the classes without positives, which we drop below
        warnings.simplefilter("ignore", UserWarning)
        scores = tm.multiclass_auroc(probs, y, num_classes=k, average="none")
    return float(scores[valid].mean())


def calibration_error(
    logits: torch.Tensor, target: torch.Tensor, *, n_bins: int = 15, norm: Literal["l1", "l2", "max"] = "l1"
) -> float:
    """Expected calibration error of the top-1 confidence over ``n_bins`` equal-width bins.

    ``l1`` is the usual ECE (count-weighted mean |accuracy - confidence|), ``max`` is MCE.
    """
    probs = probabilities(logits)
    return float(
        _tm().classification.multiclass_calibration_error(
            probs, _targets(target), num_classes=probs.shape[1], n_bins=n_bins, norm=norm
        )
    )


@dataclass(frozen=True)
class Reliability:
    """The reliability diagram's bins: ``edges`` ``(n_bins + 1,)``; per bin the mean ``confidence``,
    the ``accuracy`` (NaN where empty) and the ``count``."""

    edges: torch.Tensor
    confidence: torch.Tensor
    accuracy: torch.Tensor
    count: torch.Tensor


def reliability(logits: torch.Tensor, target: torch.Tensor, *, n_bins: int = 15) -> Reliability:
    """Top-1 confidence against accuracy in ``n_bins`` equal-width bins (as ``calibration_curve``).

    A confidence on an inner edge falls in the upper bin; exactly 1.0 falls in the last bin.
    """
    probs = probabilities(logits)
    conf, pred = probs.max(dim=1)
    correct = (pred == _targets(target)).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    idx = (torch.bucketize(conf, edges, right=True) - 1).clamp(0, n_bins - 1)
    count = torch.bincount(idx, minlength=n_bins)
    denom = count.clamp_min(1).float()
    mean_conf = torch.bincount(idx, weights=conf, minlength=n_bins) / denom
    mean_acc = torch.bincount(idx, weights=correct, minlength=n_bins) / denom
    empty = count == 0
    return Reliability(
        edges, mean_conf.masked_fill(empty, float("nan")), mean_acc.masked_fill(empty, float("nan")), count
    )


def classification_metrics(logits: torch.Tensor, target: torch.Tensor, *, top_k: int = 5) -> dict[str, float]:
    """The classification task's metrics: accuracy, top-k (when K > k), macro F1, ECE and per-class
    accuracy (``accuracy/class_<k>``, the recall of each class with examples in ``target``).

    Example:
        >>> logits, y = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
        >>> classification_metrics(logits, y)["accuracy/class_0"]
        0.5
    """
    y = _targets(target)
    k = int(logits.shape[1])
    out = {"accuracy": accuracy(logits, y, num_classes=k)}
    if k > top_k:
        out[f"top{top_k}_accuracy"] = top_k_accuracy(logits, y, top_k)
    out["f1_macro"] = f1(logits, y, average="macro", num_classes=k)
    out["ece"] = calibration_error(logits, y)
    support = torch.bincount(y, minlength=k)
    recall_k = _prf("recall", logits, y, "none", k)
    for c in range(k):
        if support[c] > 0:
            out[f"accuracy/class_{c}"] = float(recall_k[c])
    return out


# --------------------------------------------------------------------------- regression


def mse(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean squared error over every element (``mean_squared_error``, uniform over outputs)."""
    return float(_tm().mean_squared_error(*_regression(pred, target)))


def mae(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error over every element (``mean_absolute_error``)."""
    return float(_tm().mean_absolute_error(*_regression(pred, target)))


def r2(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Coefficient of determination, averaged uniformly over outputs (``r2_score``).

    Computed in float64 on values standardized by the target's mean and spread (R² does not change):
    torchmetrics' own test for a constant target is an absolute tolerance of 1e-4 on the sums of
    squares, which on raw small-scale targets reports 1.0 for a poor fit, and float32 sums lose
    everything to cancellation on targets far from 0. A constant target has no variance to explain:
    the score is then 1 for a perfect fit and 0 otherwise (scikit-learn's ``force_finite``).
    """
    p, t = _regression(pred, target)
    if len(t) < 2:
        raise ValueError("R² needs at least two examples")
    center = t.mean(dim=0)
    scale = t.std(dim=0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return float(_tm().r2_score((p - center) / scale, (t - center) / scale, multioutput="uniform_average"))


def _regression(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p, t = pred.detach().double().cpu(), target.detach().double().cpu()
    if p.ndim == 2 and p.shape[1] == 1 and t.ndim == 1:
        p = p.squeeze(1)
    if p.shape != t.shape:
        raise ValueError(f"predictions {tuple(p.shape)} and targets {tuple(t.shape)} must have one shape")
    return p, t


def regression_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """The regression task's metrics: ``mse``, ``mae`` and ``r2``.

    Example:
        >>> y = torch.tensor([1.0, 2.0, 3.0])
        >>> regression_metrics(y + 1, y)
        {'mse': 1.0, 'mae': 1.0, 'r2': -0.5}
    """
    out = {"mse": mse(pred, target), "mae": mae(pred, target)}
    out["r2"] = r2(pred, target) if len(target) > 1 else float("nan")
    return out


# --------------------------------------------------------------------------- language


def perplexity(logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int | None = None) -> float:
    """exp(mean token cross-entropy) of ``(B, T, V)`` logits against ``(B, T)`` token ids."""
    if logits.ndim == 2:  # (T, V) -> (1, T, V)
        logits, target = logits[None], target[None]
    return float(
        _tm().text.perplexity(logits.detach().float().cpu(), target.cpu(), ignore_index=ignore_index)
    )


def _sacrebleu() -> Any:
    return require("sacrebleu", "metrics", what="BLEU and chrF")


def _references(references: Sequence[str] | Sequence[Sequence[str]], n: int) -> list[list[str]]:
    """sacrebleu's layout: one list per reference *stream*, each as long as the hypotheses."""
    if n and all(isinstance(r, str) for r in references):
        return [list(references)]  # type: ignore[arg-type]
    per_hyp = [list(r) for r in references]  # one list of references per hypothesis
    if len(per_hyp) != n:
        raise ValueError(f"got {n} hypotheses but references for {len(per_hyp)}")
    width = max((len(r) for r in per_hyp), default=0)
    if any(len(r) != width for r in per_hyp):
        raise ValueError("every hypothesis needs the same number of references")
    return [[r[j] for r in per_hyp] for j in range(width)]


def bleu(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (0-100) with sacrebleu's defaults (13a tokenizer, exp smoothing).

    Args:
        hypotheses: one string per segment.
        references: one string per segment, or a list of reference strings per segment.

    Example:
        >>> round(bleu(["the cat sat on the mat"], ["the cat sat on the mat"]), 6)
        100.0
    """
    refs = _references(references, len(hypotheses))
    return float(_sacrebleu().corpus_bleu(list(hypotheses), refs).score)


def chrf(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> float:
    """Corpus chrF (0-100) with sacrebleu's defaults (character 6-grams, beta 2)."""
    refs = _references(references, len(hypotheses))
    return float(_sacrebleu().corpus_chrf(list(hypotheses), refs).score)


# --------------------------------------------------------------------------- detection, segmentation


def detection_map(
    preds: Sequence[dict[str, torch.Tensor]],
    targets: Sequence[dict[str, torch.Tensor]],
    *,
    max_detections: int = 100,
) -> dict[str, float]:
    """COCO box mAP by pycocotools: ``map`` (AP@[.5:.95]), ``map50``, ``map75`` and ``mar100``.

    Args:
        preds: per image ``{"boxes": (D, 4) xyxy, "scores": (D,), "labels": (D,)}``.
        targets: per image ``{"boxes": (G, 4) xyxy, "labels": (G,)}``; an optional ``iscrowd`` (G,)
            marks crowd regions (matched but never counted as misses).
        max_detections: the most detections per image that count (the highest scoring); COCOeval
            then applies its standard limits (1, 10, 100).

    Returns:
        The four numbers in [0, 1]; NaN when there is no true box at all, 0 when nothing was detected.
        Every class in the truth or the detections is a COCO category.

    Example:
        >>> box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
        >>> found = detection_map([{"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}],
        ...                       [{"boxes": box, "labels": torch.tensor([1])}])
        >>> round(found["map"], 6)
        1.0
    """
    COCO = require("pycocotools.coco", "metrics", what="detection mAP").COCO
    COCOeval = require("pycocotools.cocoeval", "metrics", what="detection mAP").COCOeval
    if len(preds) != len(targets):
        raise ValueError(f"got predictions for {len(preds)} images but targets for {len(targets)}")
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    detections: list[dict[str, Any]] = []
    labels: set[int] = set()
    for i, (p, t) in enumerate(zip(preds, targets)):
        images.append({"id": i})
        crowd = t.get("iscrowd", torch.zeros(len(t["labels"])))
        for box, label, c in zip(_xywh(t["boxes"]), t["labels"].tolist(), crowd.tolist()):
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i, "bbox": box, "area": box[2] * box[3],
                 "category_id": int(label), "iscrowd": int(c)}
            )  # fmt: skip
            labels.add(int(label))
        order = p["scores"].argsort(descending=True)[:max_detections]
        for box, label, score in zip(
            _xywh(p["boxes"][order]), p["labels"][order].tolist(), p["scores"][order].tolist()
        ):
            detections.append({"image_id": i, "bbox": box, "score": float(score), "category_id": int(label)})
            labels.add(int(label))
    names = ("map", "map50", "map75", "mar100")
    if not annotations:
        return dict.fromkeys(names, float("nan"))
    if not detections:
        return dict.fromkeys(names, 0.0)
    truth = COCO()
    truth.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c} for c in sorted(labels)],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth.createIndex()
        ev = COCOeval(truth, truth.loadRes(detections), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(ev.stats[i]) for name, i in zip(names, (0, 1, 2, 8))}


def _xywh(boxes: torch.Tensor) -> list[list[float]]:
    b = boxes.detach().double().cpu().reshape(-1, 4)
    return torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], dim=1).tolist()


def mean_iou(
    pred: torch.Tensor, target: torch.Tensor, *, num_classes: int, ignore_index: int | None = None
) -> float:
    """Segmentation mIoU over the whole set: per class |P ∩ T| / |P ∪ T| summed over every pixel of every
    image, averaged over the classes that occur in predictions or targets (``jaccard_score``, macro).

    Args:
        pred: ``(N, H, W)`` class ids, or ``(N, K, H, W)`` scores (arg-max over K).
        target: ``(N, H, W)`` class ids; pixels equal to ``ignore_index`` are left out.
    """
    p = pred.detach().cpu()
    if p.ndim == target.ndim + 1:
        p = p.argmax(dim=1)
    return float(
        _tm().classification.multiclass_jaccard_index(
            p.reshape(-1).long(), target.detach().cpu().reshape(-1).long(), num_classes=num_classes,
            average="macro", ignore_index=ignore_index,
        )
    )  # fmt: skip


def per_class_iou(
    pred: torch.Tensor, target: torch.Tensor, *, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """``(K,)`` IoU of each class over the whole set (0 for a class absent from both)."""
    p = pred.detach().cpu()
    if p.ndim == target.ndim + 1:
        p = p.argmax(dim=1)
    return _tm().classification.multiclass_jaccard_index(
        p.reshape(-1).long(), target.detach().cpu().reshape(-1).long(), num_classes=num_classes,
        average="none", ignore_index=ignore_index,
    )  # fmt: skip
