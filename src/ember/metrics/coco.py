"""COCO box mAP by pycocotools' ``COCOeval``, the reference implementation, on per-image detections.

Detection's validation metrics (`ember.tasks.detection`) and its bootstrap statistics
(:mod:`ember.metrics.detection`, which re-weights the images of one ``COCOeval`` matching) both start
here. pycocotools loads inside the functions that use it.

Example:
    >>> import torch

    >>> truth = [{"boxes": torch.tensor([[4.0, 4.0, 20.0, 24.0]]), "labels": torch.tensor([3])}]
    >>> found = [{"boxes": torch.tensor([[4.0, 4.0, 20.0, 22.0]]), "scores": torch.tensor([0.9]),
    ...           "labels": torch.tensor([3])}]
    >>> {k: round(v, 3) for k, v in mean_average_precision(found, truth).items()}  # IoU 0.9
    {'map': 0.9, 'map50': 1.0, 'map75': 1.0, 'mar100': 0.9}
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Any

import numpy as np
import torch

from ember._io import require

Detections = list[dict[str, torch.Tensor]]
"""Per image, ``boxes`` (m, 4) ``xyxy``, ``labels`` (m,) and, for detections, ``scores`` (m,)."""


def coco_evaluated(preds: Detections, targets: Detections, max_detections: int = 100) -> Any:
    """``COCOeval`` after ``evaluate()`` (per-image matching done, nothing accumulated) on the
    records of :func:`mean_average_precision`; None without true boxes or without detections."""
    COCO = require("pycocotools.coco", "metrics", what="mAP").COCO
    COCOeval = require("pycocotools.cocoeval", "metrics", what="mAP").COCOeval
    images: list[dict[str, Any]] = []
    truth: list[dict[str, Any]] = []
    found: list[dict[str, Any]] = []
    classes: set[int] = set()
    for image_id, (pred, target) in enumerate(zip(preds, targets, strict=True)):
        images.append({"id": image_id})
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            truth.append({"id": len(truth) + 1, "image_id": image_id, "category_id": label,
                          "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
            classes.add(label)
        order = pred["scores"].argsort(descending=True)[:max_detections]
        for box, score, label in zip(
            pred["boxes"][order].tolist(), pred["scores"][order].tolist(), pred["labels"][order].tolist()
        ):
            found.append({"image_id": image_id, "category_id": label, "score": score,
                          "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})  # fmt: skip
            classes.add(label)
    if not truth or not found:
        return None
    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints its progress
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": truth,
            "categories": [{"id": c} for c in sorted(classes)],
        }
        gt.createIndex()
        coco = COCOeval(gt, gt.loadRes(found), iouType="bbox")
        coco.evaluate()
    return coco


def mean_average_precision(
    preds: Detections, targets: Detections, max_detections: int = 100
) -> dict[str, float]:
    """COCO box mAP of detections against the truth, by pycocotools' ``COCOeval``.

    Args:
        preds: per image, ``boxes`` (n, 4) ``xyxy``, ``scores`` (n,), ``labels`` (n,).
        targets: per image, ``boxes`` (m, 4) ``xyxy`` and ``labels`` (m,).
        max_detections: the most detections per image that count (the highest scoring); COCOeval
            itself then keeps its standard limits (1, 10, 100 per image and class).

    Returns:
        ``map`` (AP@[.5:.95]), ``map50``, ``map75``, ``mar100`` (recall at 100 detections);
        NaN where there is no true box at all. Every class present in the truth or the detections is
        a COCO category; classes without truth count for nothing, as in COCOeval.
    """
    names = ("map", "map50", "map75", "mar100")
    if not any(len(t["boxes"]) for t in targets):
        return dict.fromkeys(names, math.nan)
    coco = coco_evaluated(preds, targets, max_detections)
    if coco is None:  # true boxes but no detection at all
        return dict.fromkeys(names, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints its progress
        coco.accumulate()
        coco.summarize()
    stats = np.asarray(coco.stats, dtype=np.float64)
    return {name: float(stats[i]) for name, i in zip(names, (0, 1, 2, 8))}


__all__ = ["Detections", "coco_evaluated", "mean_average_precision"]
