"""Detection's COCO mAP, as a weighted statistic over images for bootstrap intervals, and its baselines.

:func:`detection_statistics` makes pycocotools' ``COCOeval`` a weighted statistic. ``evaluate()``
runs once, matching every detection to the truth of its image (greedy, by score, per IoU threshold);
a resample then only re-weights images: each detection and true box counts as often as its image was
drawn, and ``accumulate()``'s precision-recall curves and 101-point interpolation are recomputed from
weighted cumulative sums, for every resample at once. With every weight 1 it reproduces ``COCOeval``'s
``stats`` exactly (tested against `ember.metrics.coco.mean_average_precision`); a weight of ``k``
equals ``k`` copies of the image. Two exact shortcuts keep it fast: detections after a class's last
true positive are dropped (they move neither precision at any reached recall nor the final recall),
and consecutive detections with the same outcome at every threshold are merged into one step (a run of
hits only raises precision along the way, a run of misses leaves recall where it was).

Metrics, as the task reports them: ``map50`` (the headline), ``map`` (AP@[.5:.95]), ``map75`` and
``mar100``.

Baselines, fitted on the run's training split and scored on the same images:

- ``class prior``: in every image, each class's mean training box, scored by the class's training
  frequency.
- ``components``: 8-connected components of the inked pixels (above a threshold chosen on held-out
  training images) of at least ``min_pixels`` pixels give boxes; each box's crop is classified by
  logistic regression trained on crops of the training split's true boxes
  (:mod:`ember.metrics.components`), and the box is reported once per class, scored by that
  class's probability (as a detector's per-class scores).

Example:
    >>> import torch, numpy as np
    >>> truth = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1])}]
    >>> found = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 8.0]]), "scores": torch.tensor([0.9]),
    ...           "labels": torch.tensor([1])}]
    >>> stats = detection_statistics(found, truth)(np.ones((1, 1)))
    >>> round(float(stats["map50"][0]), 3), round(float(stats["map"][0]), 3)  # IoU 0.8: 7 of 10 thresholds
    (1.0, 0.7)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ember.metrics.coco import Detections, coco_evaluated, mean_average_precision
from ember.metrics.components import CROP_SIZE, CropClassifier, crop_features, label_components
from ember.metrics.statistics import BaselineEvidence, Evidence, Statistics

NAMES = ("map50", "map", "map75", "mar100")
MAX_CELLS = 1 << 22  # resamples x thresholds x steps held at once per class
THRESHOLDS = (0.0, 0.1, 0.25, 0.4)
"""Ink thresholds the components baseline chooses from (on held-out training images)."""


@dataclass
class _ClassSteps:
    """One class's weighted-curve ingredients: true boxes per image, and its merged detection steps."""

    truth: np.ndarray  # (n,) non-ignored true boxes of the class in each image
    members: Any  # sparse (G, n): how many of step g's detections come from each image
    hits: np.ndarray  # (T, G) 1.0 where step g's detections are true positives at threshold t
    misses: np.ndarray  # (T, G) 1.0 where they are false positives


def _class_steps(coco: Any, k: int, n: int) -> _ClassSteps:
    from scipy import sparse

    p = coco.params
    n_img, n_area, max_det = len(p.imgIds), len(p.areaRng), p.maxDets[-1]
    truth = np.zeros(n)
    scores, matched, ignored, image = [], [], [], []
    for e in coco.evalImgs[k * n_area * n_img : k * n_area * n_img + n_img]:  # area range 0: "all"
        if e is None:
            continue
        truth[e["image_id"]] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
        d = np.asarray(e["dtScores"][:max_det])
        scores.append(d)
        matched.append(np.asarray(e["dtMatches"])[:, :max_det])
        ignored.append(np.asarray(e["dtIgnore"])[:, :max_det])
        image.append(np.full(len(d), e["image_id"]))
    t = len(p.iouThrs)
    if not scores or sum(len(s) for s in scores) == 0:
        return _ClassSteps(truth, sparse.csr_matrix((0, n)), np.zeros((t, 0)), np.zeros((t, 0)))
    order = np.argsort(-np.concatenate(scores), kind="mergesort")  # as COCOeval.accumulate
    dtm = np.concatenate(matched, axis=1)[:, order] != 0
    dtig = np.concatenate(ignored, axis=1)[:, order] != 0
    img = np.concatenate(image)[order]
    hits, misses = dtm & ~dtig, ~dtm & ~dtig
    last = np.flatnonzero(hits.any(axis=0))
    end = int(last[-1]) + 1 if len(last) else 0
    hits, misses, img = hits[:, :end], misses[:, :end], img[:end]
    pattern = np.concatenate([hits, misses], axis=0)  # (2T, D)
    new = np.r_[True, (pattern[:, 1:] != pattern[:, :-1]).any(axis=0)] if end else np.zeros(0, bool)
    step = np.cumsum(new) - 1  # detection -> its step
    starts = np.flatnonzero(new)
    members = sparse.csr_matrix((np.ones(end), (step, img)), shape=(len(starts), n))
    return _ClassSteps(
        truth, members, hits[:, starts].astype(np.float64), misses[:, starts].astype(np.float64)
    )


def _ap_and_recall(steps: _ClassSteps, w: np.ndarray, rec_thrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(B, T)`` AP (101-point) and final recall of one class under weights ``w``; NaN without truth."""
    b, t = len(w), steps.hits.shape[0]
    npig = w @ steps.truth  # (B,)
    ap, recall = np.zeros((b, t)), np.zeros((b, t))
    g = steps.hits.shape[1]
    if g:
        weights = np.asarray(steps.members @ w.T).T  # (B, G) weighted detections per step
        rows = max(1, MAX_CELLS // (t * g))
        for lo in range(0, b, rows):
            sl = slice(lo, lo + rows)
            ww, denominator = weights[sl][:, None, :], np.maximum(npig[sl], 1e-300)[:, None, None]
            tp = np.cumsum(ww * steps.hits, axis=2)  # (b, T, G)
            fp = np.cumsum(ww * steps.misses, axis=2)
            rc = tp / denominator
            pr = tp / (fp + tp + np.spacing(1))
            envelope = np.maximum.accumulate(pr[..., ::-1], axis=2)[..., ::-1]
            # recall threshold r lands on the first step whose recall reaches it (COCO's searchsorted)
            reached = np.searchsorted(rec_thrs, rc.ravel(), side="right").reshape(rc.shape)
            landed = np.diff(reached, axis=2, prepend=0)
            ap[sl] = (envelope * landed).sum(axis=2) / len(rec_thrs)
            recall[sl] = rc[..., -1]
    missing = npig <= 0
    ap[missing], recall[missing] = np.nan, np.nan
    return ap, recall


def detection_statistics(preds: Detections, targets: Detections, *, max_detections: int = 100) -> Statistics:
    """COCO ``map50``, ``map``, ``map75`` and ``mar100`` as weighted statistics over images.

    Args:
        preds: per image, ``boxes`` (m, 4) ``xyxy``, ``scores`` (m,), ``labels`` (m,).
        targets: per image, ``boxes`` (k, 4) ``xyxy`` and ``labels`` (k,).
        max_detections: the highest-scoring detections per image that count (as the task's).
    """
    n = len(targets)
    coco = coco_evaluated(preds, targets, max_detections)
    if coco is None:  # no truth: undefined; truth but no detections: 0 wherever a resample has truth
        has_truth = np.array([float(len(t["labels"]) > 0) for t in targets])

        def constant(w: np.ndarray) -> dict[str, np.ndarray]:
            value = np.where(w @ has_truth > 0, 0.0, np.nan)
            return {name: value.copy() for name in NAMES}

        return constant
    p = coco.params
    rec_thrs = np.asarray(p.recThrs)
    at50, at75 = np.where(p.iouThrs == 0.5)[0], np.where(p.iouThrs == 0.75)[0]
    classes = [_class_steps(coco, k, n) for k in range(len(p.catIds))]

    def statistics(w: np.ndarray) -> dict[str, np.ndarray]:
        parts = [_ap_and_recall(c, w, rec_thrs) for c in classes]
        ap = np.stack([a for a, _ in parts], axis=1)  # (B, K, T)
        recall = np.stack([r for _, r in parts], axis=1)
        valid = ~np.isnan(ap[:, :, 0])  # (B, K): classes with truth in the resample
        count = valid.sum(axis=1)

        def mean(x: np.ndarray) -> np.ndarray:  # over thresholds, then over the classes with truth
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(valid, x.mean(axis=2), 0.0).sum(axis=1) / np.where(count > 0, count, np.nan)

        return {
            "map50": mean(ap[:, :, at50]),
            "map": mean(ap),
            "map75": mean(ap[:, :, at75]),
            "mar100": mean(recall),
        }

    return statistics


# --------------------------------------------------------------------------- baselines


def true_boxes(target: Any) -> dict[str, torch.Tensor]:
    labels = torch.as_tensor(target["labels"])
    keep = labels >= 0
    return {"boxes": torch.as_tensor(target["boxes"]).float()[keep], "labels": labels[keep]}


def class_prior(
    train_targets: list[dict[str, torch.Tensor]], n: int, *, num_classes: int
) -> tuple[Detections, str]:
    """Every image gets each training class's mean box, scored by the class's training frequency."""
    boxes = torch.cat([t["boxes"] for t in train_targets]) if train_targets else torch.zeros(0, 4)
    labels = (
        torch.cat([t["labels"] for t in train_targets]) if train_targets else torch.zeros(0, dtype=torch.long)
    )
    seen = [c for c in range(num_classes) if bool((labels == c).any())]
    mean = torch.stack([boxes[labels == c].mean(dim=0) for c in seen]) if seen else torch.zeros(0, 4)
    freq = torch.tensor([float((labels == c).float().mean()) for c in seen])
    one = {"boxes": mean, "scores": freq, "labels": torch.tensor(seen, dtype=torch.long)}
    description = (
        f"in every image, each class's mean box over {len(labels):,} training boxes, scored by the class's "
        "training frequency"
    )
    return [dict(one) for _ in range(n)], description


def components_detector(
    train: list[tuple[np.ndarray, dict[str, torch.Tensor]]],
    images: list[np.ndarray],
    *,
    num_classes: int,
    thresholds: tuple[float, ...] = THRESHOLDS,
    min_pixels: int = 8,
    max_train: int = 5000,
    seed: int = 0,
) -> tuple[Detections, str]:
    """The connected-components detector (see the module docstring) and its description.

    The classifier learns from the true boxes of the first five sixths of ``train``; the ink
    threshold is the one of ``thresholds`` whose boxes score the best mAP@.5 on the last sixth
    (the first threshold when ``train`` has fewer than 12 images).

    Args:
        train: ``(image (H, W), truth {"boxes", "labels"})`` of training images.
        images: the ``(H, W)`` images to detect in.
        thresholds: candidate ink thresholds (a pixel is inked above it).
        min_pixels: smaller components are left out (stray specks).
        max_train: at most this many training crops (a seeded random subset).
    """
    held = len(train) // 6 if len(train) >= 12 else 0
    fit, chosen_on = train[: len(train) - held], train[len(train) - held :]
    crops, labels = [], []
    for image, target in fit:
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            if x1 > x0 and y1 > y0:
                crops.append(image[y0:y1, x0:x1])
                labels.append(int(label))
    if len(crops) > max_train:
        keep = np.sort(np.random.default_rng(seed).choice(len(crops), size=max_train, replace=False))
        crops, labels = [crops[i] for i in keep], [labels[i] for i in keep]
    side = train[0][0].shape[-1] if train else 1
    clf = CropClassifier(num_classes).fit(crop_features(crops, side), np.asarray(labels))
    threshold, how = thresholds[0], "given"
    if chosen_on and len(thresholds) > 1:
        truth = [t for _, t in chosen_on]
        scores = [
            mean_average_precision(_detect([x for x, _ in chosen_on], clf, t, min_pixels), truth)["map50"]
            for t in thresholds
        ]
        threshold = thresholds[int(np.nanargmax(scores))]
        how = f"the best mAP@.5 of {', '.join(f'{t:g}' for t in thresholds)} on {held:,} held-out training images"
    description = (
        f"8-connected components of inked pixels (> {threshold:g}, {how}; at least {min_pixels} pixels) as "
        f"boxes, each box's {CROP_SIZE}x{CROP_SIZE} crop and size classified by scikit-learn logistic "
        f"regression trained on {len(labels):,} training-box crops{clf.note}; every box reported once per "
        "class, scored by its probability"
    )
    return _detect(images, clf, threshold, min_pixels), description


def _detect(images: list[np.ndarray], clf: CropClassifier, threshold: float, min_pixels: int) -> Detections:
    k = clf.num_classes
    out = []
    for image in images:
        _, found = label_components(image, threshold, min_pixels=min_pixels)
        boxes = torch.tensor([box for _, box in found], dtype=torch.float32).reshape(-1, 4)
        cut = [image[y0:y1, x0:x1] for _, (x0, y0, x1, y1) in found]
        probs = torch.from_numpy(clf.predict_proba(crop_features(cut, image.shape[-1]))).float()  # (m, K)
        out.append({
            "boxes": boxes.repeat_interleave(k, dim=0),
            "scores": probs.reshape(-1),
            "labels": torch.arange(k).repeat(len(found)),
        })  # fmt: skip
    return out


def per_class_ap(
    preds: Detections, targets: Detections, *, max_detections: int = 100
) -> list[dict[str, Any]]:
    """Per class with true boxes: ``{"class", "ap50", "ap", "recall"}`` (COCO's per-category figures).

    Example:
        >>> t = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([2])}]
        >>> d = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "scores": torch.tensor([0.9]),
        ...       "labels": torch.tensor([2])}]
        >>> [{k: round(v, 6) for k, v in c.items()} for c in per_class_ap(d, t)]
        [{'class': 2, 'ap50': 1.0, 'ap': 1.0, 'recall': 1.0}]
    """
    coco = coco_evaluated(preds, targets, max_detections)
    if coco is None:
        return []
    p, ones = coco.params, np.ones((1, len(targets)))
    at50 = np.where(p.iouThrs == 0.5)[0]
    out = []
    for k, category in enumerate(p.catIds):
        ap, recall = _ap_and_recall(_class_steps(coco, k, len(targets)), ones, np.asarray(p.recThrs))
        if not np.isnan(ap[0, 0]):
            out.append({"class": int(category), "ap50": float(ap[0, at50].mean()), "ap": float(ap[0].mean()),
                        "recall": float(recall[0].mean())})  # fmt: skip
    return out


def detection_evidence(preds: Detections, targets: Detections, *, max_detections: int = 100) -> Evidence:
    """Per-image detections and truth as :class:`Evidence` over images."""
    return Evidence(
        detection_statistics(preds, targets, max_detections=max_detections), len(targets), "images"
    )


def detection_baselines(
    train: list[tuple[np.ndarray, dict[str, torch.Tensor]]],
    images: list[np.ndarray],
    targets: Detections,
    *,
    num_classes: int,
    max_detections: int = 100,
    seed: int = 0,
) -> list[BaselineEvidence]:
    """``class prior`` and ``components`` on the evaluated ``images`` (with their ``targets``), fitted
    on the ``(image (H, W), truth)`` pairs of ``train``."""
    prior, prior_text = class_prior([t for _, t in train], len(targets), num_classes=num_classes)
    found, found_text = components_detector(train, images, num_classes=num_classes, seed=seed)
    return [
        BaselineEvidence(
            "class prior", prior_text, detection_statistics(prior, targets, max_detections=max_detections)
        ),
        BaselineEvidence(
            "components", found_text, detection_statistics(found, targets, max_detections=max_detections)
        ),
    ]


__all__ = [
    "NAMES",
    "THRESHOLDS",
    "class_prior",
    "components_detector",
    "detection_baselines",
    "detection_evidence",
    "detection_statistics",
    "per_class_ap",
    "true_boxes",
]
