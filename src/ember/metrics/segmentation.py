"""Segmentation's mIoU as a weighted statistic over images (for bootstrap intervals), and its baselines.

Every image contributes its own confusion matrix (truth x prediction pixel counts). A resample's
metrics come from the sum of its images' matrices, each counted as often as it was drawn, exactly
as the task's running matrix gives them over the whole split (`ember.tasks.segmentation`): ``miou``
over the classes that occur in truth or prediction (background included), ``miou_fg`` without
class 0, and ``pixel_accuracy``. Images, not pixels, are resampled: pixels of one image (one digit's
stroke) are far from independent.

Baselines, fitted on the run's training split and scored on the same images:

- ``majority``: every pixel gets the most frequent pixel class of the training masks (background).
- ``components``: pixels above a threshold (the one of 0.05, 0.10, ..., 0.95 that best separates
  object from background pixels in training masks) form 8-connected components; each is classified
  from its crop by logistic regression (:mod:`ember.metrics.components`) trained on the training
  images' components, labelled by the most frequent object class under them, and its pixels are
  painted with the predicted class.

Example:
    >>> import numpy as np
    >>> confusion = np.array([[[3, 1], [0, 0]], [[2, 0], [1, 2]]])  # two images, 2 classes
    >>> {k: round(float(v[0]), 4) for k, v in segmentation_statistics(confusion)(np.ones((1, 2))).items()}
    {'miou': 0.6071, 'miou_fg': 0.5, 'pixel_accuracy': 0.7778}
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ember.metrics.components import CROP_SIZE, CropClassifier, crop_features, label_components
from ember.metrics.statistics import BaselineEvidence, Evidence, Statistics

THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))


def confusion_per_image(
    output: torch.Tensor, target: torch.Tensor, *, ignore_index: int = -100
) -> torch.Tensor:
    """``(B, K, K)`` int64 pixel counts, truth x prediction, of each image; ``ignore_index`` pixels skipped.

    Args:
        output: ``(B, K, H, W)`` logits (or any scores whose argmax is the class).
        target: ``(B, H, W)`` class ids.
    """
    b, k = output.shape[:2]
    pred = output.argmax(dim=1)
    keep = target != ignore_index
    image = torch.arange(b, device=target.device)[:, None, None].expand_as(target)
    index = (image * k * k + target.clamp(min=0) * k + pred)[keep]
    return torch.bincount(index, minlength=b * k * k).view(b, k, k).cpu()


class ConfusionPerImage:
    """Collects :func:`confusion_per_image` over a pass; ``result()`` is ``(N, K, K)`` int64."""

    def __init__(self, *, ignore_index: int = -100) -> None:
        self.ignore_index = ignore_index
        self.parts: list[torch.Tensor] = []

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        self.parts.append(confusion_per_image(output.detach(), target, ignore_index=self.ignore_index))

    def result(self) -> np.ndarray:
        return torch.cat(self.parts).numpy() if self.parts else np.zeros((0, 0, 0), np.int64)


def _masked_mean(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    count = valid.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.where(valid, values, 0.0).sum(axis=-1) / count, np.nan)


def segmentation_statistics(confusion: np.ndarray) -> Statistics:
    """``miou``, ``miou_fg`` and ``pixel_accuracy`` of weighted per-image ``(n, K, K)`` confusion matrices."""
    c = np.asarray(confusion, np.float64)
    n, k = c.shape[0], c.shape[1]
    flat = c.reshape(n, k * k)

    def statistics(w: np.ndarray) -> dict[str, np.ndarray]:
        m = (w @ flat).reshape(len(w), k, k)
        inter = np.diagonal(m, axis1=1, axis2=2)
        union = m.sum(axis=2) + m.sum(axis=1) - inter
        valid = union > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = inter / union
            accuracy = inter.sum(axis=1) / m.sum(axis=(1, 2))
        return {
            "miou": _masked_mean(iou, valid),
            "miou_fg": _masked_mean(iou[:, 1:], valid[:, 1:]),
            "pixel_accuracy": accuracy,
        }

    return statistics


def majority_confusion(
    train_masks: list[np.ndarray], masks: list[np.ndarray], *, num_classes: int, ignore_index: int = -100
) -> tuple[np.ndarray, int]:
    """Per-image confusion of "every pixel is the most frequent training pixel class", and that class."""
    counts = np.zeros(num_classes, np.int64)
    for m in train_masks:
        counts += np.bincount(m[m != ignore_index].ravel(), minlength=num_classes)[:num_classes]
    top = int(counts.argmax())
    out = np.zeros((len(masks), num_classes, num_classes), np.int64)
    for i, m in enumerate(masks):
        out[i, :, top] = np.bincount(m[m != ignore_index].ravel(), minlength=num_classes)[:num_classes]
    return out, top


def choose_threshold(images: list[np.ndarray], masks: list[np.ndarray], *, ignore_index: int = -100) -> float:
    """The :data:`THRESHOLDS` value at which ``image > t`` agrees best with ``mask > 0`` over all pixels."""
    x = np.stack(images)
    m = np.stack(masks)
    keep = m != ignore_index
    fg = m > 0
    scores = [np.count_nonzero(((x > t) == fg) & keep) for t in THRESHOLDS]
    return THRESHOLDS[int(np.argmax(scores))]


def _components(image: np.ndarray, threshold: float) -> tuple[np.ndarray, list[Any], list[np.ndarray]]:
    labels, found = label_components(image, threshold)
    crops = [image[y0:y1, x0:x1] * (labels[y0:y1, x0:x1] == i) for i, (x0, y0, x1, y1) in found]
    return labels, found, crops


def components_confusion(
    train: list[tuple[np.ndarray, np.ndarray]],
    evaluated: list[tuple[np.ndarray, np.ndarray]],
    *,
    num_classes: int,
    ignore_index: int = -100,
) -> tuple[np.ndarray, str]:
    """Per-image confusion of the threshold + components + logistic-regression baseline, and its description.

    Args:
        train, evaluated: ``(image (H, W), mask (H, W))`` pairs.
    """
    threshold = choose_threshold([x for x, _ in train], [m for _, m in train], ignore_index=ignore_index)
    crops, labels = [], []
    for image, mask in train:
        comp, found, cut = _components(image, threshold)
        for (i, _), crop in zip(found, cut):
            under = mask[(comp == i) & (mask > 0) & (mask != ignore_index)]
            if under.size:  # a component over no object pixel teaches no class
                crops.append(crop)
                labels.append(int(np.bincount(under).argmax()))
    side = train[0][0].shape[-1] if train else 1
    clf = CropClassifier(num_classes).fit(crop_features(crops, side), np.asarray(labels))
    out = np.zeros((len(evaluated), num_classes, num_classes), np.int64)
    for j, (image, mask) in enumerate(evaluated):
        comp, found, cut = _components(image, threshold)
        paint = np.zeros(int(comp.max()) + 1, np.int64)  # component id -> class (0: background)
        if found:
            paint[[i for i, _ in found]] = clf.predict_proba(crop_features(cut, image.shape[-1])).argmax(
                axis=1
            )
        pred = paint[comp]
        keep = mask != ignore_index
        out[j] = np.bincount(
            (mask[keep] * num_classes + pred[keep]).ravel(), minlength=num_classes * num_classes
        ).reshape(num_classes, num_classes)
    description = (
        f"pixels above {threshold:g} (the threshold that best separates object from background pixels in "
        f"training), 8-connected components, each classified from its {CROP_SIZE}x{CROP_SIZE} crop and box "
        f"size by scikit-learn logistic regression trained on {len(labels):,} components of {len(train):,} "
        f"training images{clf.note}; a component's pixels are painted with its class"
    )
    return out, description


def segmentation_evidence(confusion: np.ndarray) -> Evidence:
    """Per-image ``(n, K, K)`` confusion matrices as :class:`Evidence` over images."""
    confusion = np.asarray(confusion)
    return Evidence(segmentation_statistics(confusion), len(confusion), "images")


def segmentation_baselines(
    train: list[tuple[np.ndarray, np.ndarray]],
    evaluated: list[tuple[np.ndarray, np.ndarray]],
    *,
    num_classes: int,
    ignore_index: int = -100,
    classes: list[str] | None = None,
) -> list[BaselineEvidence]:
    """``majority`` and ``components`` on the ``evaluated`` ``(image, mask)`` pairs, fitted on ``train``."""
    k = num_classes
    majority, top = majority_confusion(
        [m for _, m in train], [m for _, m in evaluated], num_classes=k, ignore_index=ignore_index
    )
    name = classes[top] if classes and top < len(classes) else f"class {top}"
    classical, description = components_confusion(train, evaluated, num_classes=k, ignore_index=ignore_index)
    return [
        BaselineEvidence(
            "majority",
            f"every pixel {name} (the most frequent pixel class in {len(train):,} training images)",
            segmentation_statistics(majority),
        ),
        BaselineEvidence("components", description, segmentation_statistics(classical)),
    ]


__all__ = [
    "THRESHOLDS",
    "ConfusionPerImage",
    "choose_threshold",
    "components_confusion",
    "confusion_per_image",
    "majority_confusion",
    "segmentation_baselines",
    "segmentation_evidence",
    "segmentation_statistics",
]
