"""Detection: CenterNet's loss (focal loss on heatmaps + L1 on box size and offset) and COCO mAP.

Batches are ``(images, {"boxes", "labels"})`` as ``digit-scenes`` gives them: ``images``
``(B, C, H, W)``, ``boxes`` ``(B, M, 4)`` ``xyxy`` in input pixels, ``labels`` ``(B, M)`` with ``-1``
marking padding (a dict ``{"images", "boxes", "labels"}`` works too). The model returns
``heatmap`` / ``size`` / ``offset`` maps (see `ember.models.detector`).

mAP is computed by pycocotools' ``COCOeval``, the reference implementation, on the detections of
`ember.models.detector.decode`: ``map50`` (AP at IoU 0.5, the headline), ``map`` (AP averaged over
IoU 0.50:0.05:0.95), ``map75`` and ``mar100`` (recall with 100 detections per image). It calls
pycocotools directly because torchmetrics' ``MeanAveragePrecision``, a wrapper around the same
``COCOeval``, refuses to start without torchvision, which is not installable next to the CPU torch.

Example:
    >>> import torch
    >>> truth = [{"boxes": torch.tensor([[4.0, 4.0, 20.0, 24.0]]), "labels": torch.tensor([3])}]
    >>> found = [{"boxes": torch.tensor([[4.0, 4.0, 20.0, 22.0]]), "scores": torch.tensor([0.9]),
    ...           "labels": torch.tensor([3])}]
    >>> {k: round(v, 3) for k, v in mean_average_precision(found, truth).items()}  # IoU 0.9
    {'map': 0.9, 'map50': 1.0, 'map75': 1.0, 'mar100': 0.9}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ember.metrics.coco import Detections, mean_average_precision
from ember.models.detector import STRIDE, decode
from ember.tasks.base import LossMean, registry
from ember.tasks.spec import ModelSpec

if TYPE_CHECKING:  # the evaluation stage's pieces load when a stage asks, not with `import ember`
    from ember.metrics.statistics import BaselineEvidence, Evidence
    from ember.tasks.items import ReportItem

__all__ = ["Detection", "DetectionEvaluation", "centernet_targets", "mean_average_precision"]


def _unpack(batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if isinstance(batch, list | tuple) and len(batch) == 2 and isinstance(batch[1], dict):
        return batch[0], batch[1]
    if isinstance(batch, dict) and {"boxes", "labels"} <= batch.keys():
        images = batch.get("images", batch.get("image"))
        if images is not None:
            return images, {"boxes": batch["boxes"], "labels": batch["labels"]}
    raise ValueError(
        "detection batches must be (images, {'boxes', 'labels'}) or a dict with images, boxes and labels; "
        f"got {type(batch).__name__}. See ember.data.scenes for the layout."
    )


def _gaussian_radius(h: torch.Tensor, w: torch.Tensor, min_overlap: float = 0.7) -> torch.Tensor:
    """CenterNet's radius (in cells) within which a shifted box still overlaps its truth enough."""
    b1, c1 = h + w, w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + (b1**2 - 4 * c1).clamp(min=0).sqrt()) / 2
    b2, c2 = 2 * (h + w), (1 - min_overlap) * w * h
    r2 = (b2 + (b2**2 - 16 * c2).clamp(min=0).sqrt()) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (h + w), (min_overlap - 1) * w * h
    r3 = (b3 + (b3**2 - 4 * a3 * c3).clamp(min=0).sqrt()) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def centernet_targets(
    boxes: torch.Tensor, labels: torch.Tensor, num_classes: int, size: tuple[int, int], stride: int = STRIDE
) -> dict[str, torch.Tensor]:
    """CenterNet's training targets for a padded batch of boxes.

    Args:
        boxes: (B, M, 4) ``xyxy`` in input pixels.
        labels: (B, M) classes, ``-1`` for padding.
        num_classes: heatmap channels K.
        size: the output grid (h, w).
        stride: input pixels per cell.

    Returns:
        ``heatmap`` (B, K, h, w): per class, the max over its objects of a Gaussian of peak 1 at the
        centre cell (sigma from CenterNet's radius); ``index`` (N, 3): (batch, y, x) of each object's
        centre cell; ``size`` (N, 2) its box (w, h) in pixels; ``offset`` (N, 2) its centre's position
        inside the cell, in [0, 1).
    """
    h, w = size
    valid = labels >= 0
    b_idx = valid.nonzero()[:, 0]
    box, cls = boxes[valid].float(), labels[valid]  # (N, 4), (N,)
    centre = torch.stack([box[:, 0] + box[:, 2], box[:, 1] + box[:, 3]], dim=1) / (2 * stride)
    cell = centre.floor().clamp(min=0)
    cell = torch.minimum(cell, torch.tensor([w - 1.0, h - 1.0], device=cell.device))
    wh = torch.stack([box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]], dim=1)
    radius = _gaussian_radius(wh[:, 1] / stride, wh[:, 0] / stride).floor().clamp(min=0)
    sigma = (2 * radius + 1) / 6  # (N,)
    ys = torch.arange(h, device=box.device, dtype=torch.float32)
    xs = torch.arange(w, device=box.device, dtype=torch.float32)
    dy = (ys[None, :] - cell[:, 1:2]) ** 2  # (N, h)
    dx = (xs[None, :] - cell[:, 0:1]) ** 2  # (N, w)
    blobs = torch.exp(-(dy[:, :, None] + dx[:, None, :]) / (2 * sigma[:, None, None] ** 2))  # (N, h, w)
    heatmap = torch.zeros(labels.shape[0] * num_classes, h * w, device=box.device)
    slot = (b_idx * num_classes + cls)[:, None].expand(-1, h * w)
    heatmap = heatmap.scatter_reduce(0, slot, blobs.flatten(1), reduce="amax")
    index = torch.stack([b_idx, cell[:, 1].long(), cell[:, 0].long()], dim=1)
    return {
        "heatmap": heatmap.view(labels.shape[0], num_classes, h, w),
        "index": index,
        "size": wh,
        "offset": centre - cell,
    }


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 2.0, beta: float = 4.0
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed and divided by the number of peaks (target 1)."""
    logits, target = logits.float(), target.float()
    p = logits.sigmoid()
    pos = target.eq(1).float()
    pos_loss = F.logsigmoid(logits) * (1 - p) ** alpha * pos
    neg_loss = F.logsigmoid(-logits) * p**alpha * (1 - target) ** beta * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


class Detection:
    """CenterNet detection: focal loss on class heatmaps, L1 on box size and centre offset; COCO mAP.

    Args:
        size_weight: weight of the L1 loss on box width and height (in pixels).
        offset_weight: weight of the L1 loss on the centre offset (in cells).
        max_detections: detections per image that are scored (COCO's 100).
        stride: input pixels per heatmap cell of the model.

    Example:
        >>> from ember import models
        >>> model = models.create("centernet_tiny")
        >>> images = torch.rand(2, 1, 32, 32)
        >>> target = {"boxes": torch.tensor([[[2.0, 2.0, 12.0, 14.0]], [[8.0, 8.0, 30.0, 20.0]]]),
        ...           "labels": torch.tensor([[1], [-1]])}
        >>> task = Detection()
        >>> output, target = task.forward(model, (images, target))
        >>> bool(task.loss(output, target) > 0)
        True
    """

    headline = "map50"
    mode: Literal["max", "min"] = "max"
    checks = ("overfitting", "leakage", "shift")
    instead = {
        "check.imbalance": "its labels are boxes, several per image; `ember report` shows every class's AP"
    }
    min_score = 0.05
    """Served detections scoring below this are left out of the answer (COCO scoring keeps all)."""

    def __init__(
        self,
        *,
        size_weight: float = 0.1,
        offset_weight: float = 1.0,
        max_detections: int = 100,
        stride: int = STRIDE,
    ) -> None:
        self.size_weight, self.offset_weight = size_weight, offset_weight
        self.max_detections, self.stride = max_detections, stride

    # outputs and targets are dicts of tensors (see the module docstring), hence ``Any`` below
    def forward(self, model: nn.Module, batch: Any) -> tuple[Any, Any]:
        images, target = _unpack(batch)
        return model(images), target

    def loss(self, output: Any, target: Any) -> torch.Tensor:
        heat = output["heatmap"]
        t = centernet_targets(
            target["boxes"], target["labels"], heat.shape[1], (heat.shape[2], heat.shape[3]), self.stride
        )
        b, y, x = t["index"].unbind(1)
        n = max(len(b), 1)
        size = output["size"].float()[b, :, y, x]  # (N, 2)
        offset = output["offset"].float()[b, :, y, x]
        size_loss = F.l1_loss(size, t["size"], reduction="sum") / n
        offset_loss = F.l1_loss(offset, t["offset"], reduction="sum") / n
        return (
            focal_loss(heat, t["heatmap"]) + self.size_weight * size_loss + self.offset_weight * offset_loss
        )

    def evaluation(self) -> DetectionEvaluation:
        return DetectionEvaluation(max_detections=self.max_detections, stride=self.stride)

    # ------------------------------------------------------------------ lifecycle (tasks.contract)

    def export_module(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        """The detector returning its maps as a tuple (ONNX and the server take no dicts)."""
        return MapsAsTuple(model)

    def evidence(self, evaluation: DetectionEvaluation, data: Any, *, n_resamples: int = 1000) -> Evidence:
        """The detections and truth as :class:`Evidence` over images (`ember.metrics.detection`)."""
        from ember.metrics.detection import detection_evidence

        return detection_evidence(evaluation.preds, evaluation.targets, max_detections=self.max_detections)

    def baselines(
        self, train: Any, data: Any, evaluation: DetectionEvaluation, spec: ModelSpec, *, seed: int = 0,
        n_resamples: int = 1000, max_train: int = 2000,
    ) -> list[BaselineEvidence]:  # fmt: skip
        """``class prior`` and ``components`` on the evaluated images, fitted on at most ``max_train``
        training images (a seeded random subset)."""
        from ember.metrics import components
        from ember.metrics.detection import detection_baselines, true_boxes

        fit = [(x, true_boxes(t)) for x, t in components.items(train, limit=max_train, seed=seed)]
        images = [x for x, _ in components.items(data)]
        k = (
            len(spec.classes)
            if spec.classes
            else 1 + max((int(t["labels"].max()) for _, t in fit if len(t["labels"])), default=0)
        )
        return detection_baselines(
            fit, images, evaluation.targets, num_classes=k, max_detections=self.max_detections, seed=seed
        )

    def report_items(self, evaluation: DetectionEvaluation, data: Any, spec: ModelSpec) -> list[ReportItem]:
        """Per class: AP at IoU 0.5, AP over 0.50:0.95 and recall (COCO's per-category figures)."""
        from ember.metrics.detection import per_class_ap
        from ember.tasks import items

        found = per_class_ap(evaluation.preds, evaluation.targets, max_detections=self.max_detections)
        names = spec.classes or []
        rows = [[names[c["class"]] if c["class"] < len(names) else c["class"], c["ap50"], c["ap"], c["recall"],
                 sum(int((t["labels"] == c["class"]).sum()) for t in evaluation.targets)] for c in found]  # fmt: skip
        note = "per class with true boxes in the split: COCO's AP and recall (100 detections per image)"
        return [items.Table(["class", "AP@.5", "AP@[.5:.95]", "recall", "true boxes"], rows, note=note,
                            section="per-class", numeric=(1, 2, 3, 4))]  # fmt: skip

    def decode(self, outputs: Any, spec: ModelSpec) -> dict[str, Any]:
        """Per image: its detections, ``{"box": [x0, y0, x1, y1], "label", "class", "score"}``."""
        maps = dict(zip(OUTPUTS, outputs, strict=True)) if isinstance(outputs, tuple | list) else outputs
        found = decode(maps, k=self.max_detections, stride=self.stride, min_score=self.min_score)
        names = spec.classes or []
        return {
            "detections": [
                [
                    {"box": [round(v, 2) for v in box], "label": label,
                     "class": names[label] if label < len(names) else str(label), "score": round(score, 4)}
                    for box, label, score in zip(d["boxes"].tolist(), d["labels"].tolist(), d["scores"].tolist(),
                                                 strict=True)
                ]
                for d in found
            ]
        }  # fmt: skip


OUTPUTS = ("heatmap", "size", "offset")
"""The order of a detector's maps in :class:`MapsAsTuple`'s tuple (and in an exported graph)."""


class MapsAsTuple(nn.Module):
    """A detector whose ``{"heatmap", "size", "offset"}`` dict comes out as a tuple in :data:`OUTPUTS` order."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[k] for k in OUTPUTS)


class DetectionEvaluation:
    """Collects decoded detections and true boxes of one pass; `compute` runs COCOeval on them.

    `add` takes detections directly (any detector's, in the `decode` format); `update` decodes
    CenterNet outputs first.
    """

    def __init__(self, *, max_detections: int = 100, stride: int = STRIDE) -> None:
        self.max_detections, self.stride = max_detections, stride
        self.preds: Detections = []
        self.targets: Detections = []
        self.loss = LossMean()

    def add(self, preds: Detections, targets: Detections) -> None:
        """Record one image's detections and truth per list entry (``boxes`` xyxy, ``labels``)."""
        if len(preds) != len(targets):
            raise ValueError(f"got detections for {len(preds)} images but truth for {len(targets)}")
        self.preds += [
            {k: v.detach().float().cpu() if k != "labels" else v.cpu() for k, v in p.items()} for p in preds
        ]
        self.targets += [
            {"boxes": t["boxes"].detach().float().cpu(), "labels": t["labels"].cpu()} for t in targets
        ]

    def update(self, output: Any, target: Any, loss: torch.Tensor) -> None:
        preds = decode(output, k=self.max_detections, stride=self.stride)
        valid = target["labels"] >= 0
        truth = [
            {"boxes": target["boxes"][i][valid[i]], "labels": target["labels"][i][valid[i]]}
            for i in range(len(preds))
        ]
        self.add(preds, truth)
        self.loss.update(loss, len(preds))

    def compute(self) -> dict[str, float]:
        return {
            "loss": self.loss.compute(),
            **mean_average_precision(self.preds, self.targets, self.max_detections),
        }


@registry.register("detection")
def detection(
    *, size_weight: float = 0.1, offset_weight: float = 1.0, max_detections: int = 100, stride: int = STRIDE
) -> Detection:
    """CenterNet detection (see :class:`Detection`)."""
    return Detection(
        size_weight=size_weight, offset_weight=offset_weight, max_detections=max_detections, stride=stride
    )
