"""Detection: mAP equals pycocotools' COCOeval run directly; CenterNet targets, loss and a tiny run."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import pytest
import torch

import ember
from ember import models, tasks
from ember.models.detector import decode
from ember.tasks.detection import (
    Detection,
    DetectionEvaluation,
    centernet_targets,
    focal_loss,
    mean_average_precision,
)

pytest.importorskip("pycocotools")


def _coco_reference(preds: list[dict], targets: list[dict]) -> dict[str, float]:
    """COCOeval on COCO json built by hand: boxes as [x, y, w, h], one category per class seen."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations, results, images, categories = [], [], [], set()
    for image_id, (p, t) in enumerate(zip(preds, targets)):
        images.append({"id": image_id, "width": 64, "height": 64})
        for (x0, y0, x1, y1), c in zip(t["boxes"].tolist(), t["labels"].tolist()):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": c,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
            categories.add(c)
        for (x0, y0, x1, y1), s, c in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            results.append(
                {"image_id": image_id, "category_id": c, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": s}
            )
            categories.add(c)
    dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c} for c in sorted(categories)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map": ev.stats[0], "map50": ev.stats[1], "map75": ev.stats[2], "mar100": ev.stats[8]}


def _det(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(boxes).reshape(-1, 4),
        "scores": torch.tensor(scores),
        "labels": torch.tensor(labels),
    }


def _gt(boxes: list[list[float]], labels: list[int]) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes).reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.int64)}


def test_hand_made_cases_have_hand_computed_values() -> None:
    box = [10.0, 10.0, 30.0, 30.0]
    perfect = mean_average_precision([_det([box], [0.9], [1])], [_gt([box], [1])])
    assert perfect == pytest.approx({"map": 1.0, "map50": 1.0, "map75": 1.0, "mar100": 1.0})
    # two objects, one found: precision 1 up to recall 0.5, so 51 of COCO's 101 recall points
    half = mean_average_precision([_det([box], [0.9], [1])], [_gt([box, [40.0, 40.0, 50.0, 60.0]], [1, 1])])
    assert half["map50"] == pytest.approx(51 / 101) and half["mar100"] == pytest.approx(0.5)
    # IoU 0.62 (6.2 wide inside 10 wide, same height): a hit at thresholds 0.50, 0.55, 0.60 of ten
    shifted = mean_average_precision(
        [_det([[0.0, 0.0, 6.2, 10.0]], [0.5], [2])], [_gt([[0.0, 0.0, 10.0, 10.0]], [2])]
    )
    assert shifted == pytest.approx({"map": 0.3, "map50": 1.0, "map75": 0.0, "mar100": 0.3})
    # the wrong class is no hit; a class with no truth counts for nothing
    wrong = mean_average_precision([_det([box], [0.9], [3])], [_gt([box], [1])])
    assert wrong["map50"] == 0.0
    nothing = mean_average_precision([_det([], [], [])], [_gt([box], [1])])
    assert nothing["map50"] == 0.0
    assert math.isnan(mean_average_precision([_det([box], [0.9], [1])], [_gt([], [])])["map50"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_cases_equal_cocoeval(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for image in range(12):
        n = int(torch.randint(0, 5, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 48
        wh = 4 + torch.rand(n, 2, generator=g) * 20
        truth = torch.cat([xy, xy + wh], dim=1)
        labels = torch.randint(0, 4, (n,), generator=g)
        # detections: jittered truths (some mislabelled), plus false positives, random scores
        jitter = truth + torch.randn(n, 4, generator=g) * 3 * (image % 3)
        wrong = torch.rand(n, generator=g) < 0.2
        det_labels = torch.where(wrong, torch.randint(0, 5, (n,), generator=g), labels)
        m = int(torch.randint(0, 4, (1,), generator=g))
        fxy = torch.rand(m, 2, generator=g) * 48
        fake = torch.cat([fxy, fxy + 4 + torch.rand(m, 2, generator=g) * 20], dim=1)
        boxes = torch.cat([jitter, fake])
        preds.append(
            {
                "boxes": boxes,
                "scores": torch.rand(len(boxes), generator=g),
                "labels": torch.cat([det_labels, torch.randint(0, 5, (m,), generator=g)]),
            }
        )
        targets.append({"boxes": truth, "labels": labels})
    ours = mean_average_precision(preds, targets)
    reference = _coco_reference(preds, targets)
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key
    # the task's accumulator, fed in two parts, gives the same
    ev = DetectionEvaluation()
    ev.add(preds[:5], targets[:5])
    ev.add(preds[5:], targets[5:])
    got = ev.compute()
    for key, value in reference.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_update_decodes_model_outputs_and_scores_them_like_cocoeval() -> None:
    torch.manual_seed(0)
    out = {
        "heatmap": torch.randn(3, 4, 8, 8),
        "size": 4 + 8 * torch.rand(3, 2, 8, 8),
        "offset": torch.rand(3, 2, 8, 8),
    }
    target = {
        "boxes": torch.tensor(
            [[[4.0, 4.0, 12.0, 14.0], [0, 0, 0, 0]], [[10.0, 2.0, 20.0, 10.0], [1, 1, 9, 9]], [[0.0] * 4] * 2]
        ),
        "labels": torch.tensor([[1, -1], [2, 0], [-1, -1]]),
    }
    ev = Detection(max_detections=10).evaluation()
    ev.update(out, target, torch.tensor(1.0))
    preds = decode(out, k=10)
    truth = [
        _gt([[4.0, 4.0, 12.0, 14.0]], [1]),
        _gt([[10.0, 2.0, 20.0, 10.0], [1, 1, 9, 9]], [2, 0]),
        _gt([], []),
    ]
    reference = _coco_reference(preds, truth)
    got = ev.compute()
    assert got["loss"] == 1.0
    for key, value in reference.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_centernet_targets_put_peaks_sizes_and_offsets_at_centres() -> None:
    boxes = torch.tensor(
        [[[2.0, 6.0, 22.0, 26.0], [0.0, 0.0, 0.0, 0.0]], [[33.0, 9.0, 41.0, 29.0], [0, 0, 4, 4]]]
    )
    labels = torch.tensor([[3, -1], [1, 1]])
    t = centernet_targets(boxes, labels, num_classes=4, size=(16, 16), stride=4)
    assert t["heatmap"].shape == (2, 4, 16, 16)
    # centre (12, 16) px -> cell (x=3, y=4), offset 0; centre (37, 19) -> cell (9, 4) + (0.25, 0.75)
    assert t["index"].tolist() == [[0, 4, 3], [1, 4, 9], [1, 0, 0]]
    torch.testing.assert_close(t["size"], torch.tensor([[20.0, 20.0], [8.0, 20.0], [4.0, 4.0]]))
    torch.testing.assert_close(t["offset"], torch.tensor([[0.0, 0.0], [0.25, 0.75], [0.5, 0.5]]))
    heat = t["heatmap"]
    assert heat[0, 3, 4, 3] == 1 and heat[1, 1, 4, 9] == 1 and heat[1, 1, 0, 0] == 1
    assert int(heat.eq(1).sum()) == 3 and heat[0, :3].max() == 0 and heat.max() <= 1
    assert 0 < heat[0, 3, 4, 4] < 1  # a Gaussian around the peak


def test_focal_loss_matches_its_formula() -> None:
    logits = torch.randn(2, 3, 5, 5)
    target = torch.rand(2, 3, 5, 5) * 0.9
    target[0, 1, 2, 2] = target[1, 0, 4, 0] = 1.0
    p = torch.sigmoid(logits.double())
    pos = target == 1
    expected = (
        -(
            (torch.log(p) * (1 - p) ** 2)[pos].sum()
            + (torch.log(1 - p) * p**2 * (1 - target.double()) ** 4)[~pos].sum()
        )
        / 2
    )
    torch.testing.assert_close(focal_loss(logits, target).double(), expected, rtol=1e-5, atol=1e-6)


def test_a_tiny_detector_learns_one_batch() -> None:
    torch.manual_seed(0)
    model = models.create("centernet_tiny", num_classes=3)
    task = tasks.create("detection")
    images = torch.zeros(4, 1, 32, 32)
    boxes = torch.tensor(
        [[[4.0, 4.0, 14.0, 16.0]], [[16.0, 10.0, 28.0, 30.0]], [[2.0, 18.0, 10.0, 30.0]], [[8, 8, 24, 24]]]
    )
    for i, (x0, y0, x1, y1) in enumerate(boxes[:, 0].int().tolist()):
        images[i, 0, y0:y1, x0:x1] = 1.0
    batch = (images, {"boxes": boxes, "labels": torch.tensor([[0], [1], [2], [1]])})
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        output, target = task.forward(model, batch)
        loss = task.loss(output, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_detection_recipe_runs_end_to_end(tmp_path: Path, repo_root: Path) -> None:
    overrides = {
        "data.source": "digits",
        "data.num_train": 48,
        "data.num_test": 16,
        "data.canvas_size": 32,
        "data.batch_size": 16,
        "model.name": "centernet_tiny",
        "trainer.epochs": 1,
    }
    result = ember.fit(
        repo_root / "configs" / "digit-detect.yaml", overrides=overrides, runs_dir=tmp_path / "runs"
    )
    for key in ("val/map50", "val/map", "test/map50", "test/map"):
        assert 0.0 <= result.metrics[key] <= 1.0
    assert result.steps == 3  # 43 training scenes (10% validation) in batches of 16
