"""Segmentation: mIoU equals numpy and scikit-learn's jaccard_score; the loss; a tiny recipe run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ember
from ember import tasks
from ember.tasks.segmentation import Segmentation, dice_loss

pytest.importorskip("torchmetrics")


def _logits_for(pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) class ids -> (B, K, H, W) logits whose arg-max is ``pred``."""
    return F.one_hot(pred, num_classes).movedim(-1, 1).float() * 5.0


def _numpy_miou(truth: np.ndarray, pred: np.ndarray, num_classes: int) -> tuple[float, float, np.ndarray]:
    cm = np.bincount(num_classes * truth.ravel() + pred.ravel(), minlength=num_classes**2).reshape(
        num_classes, -1
    )
    inter = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    seen = union > 0
    iou = np.where(seen, inter / np.maximum(union, 1), np.nan)
    return float(np.nanmean(iou)), float(np.nanmean(iou[1:])), iou


def test_hand_made_case() -> None:
    truth = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0]]])
    pred = torch.tensor([[[0, 0, 1, 0], [0, 1, 1, 1], [2, 0, 0, 0]]])
    # class 0: 5 shared of 8 in either; class 1: 3 of 5; class 2: 1 of 2; class 3 never appears
    ev = Segmentation().evaluation()
    logits = _logits_for(pred, 4)
    ev.update(logits, truth, torch.tensor(0.0))
    got = ev.compute()
    assert got["iou/class_0"] == pytest.approx(5 / 8)
    assert got["iou/class_1"] == pytest.approx(3 / 5)
    assert got["iou/class_2"] == pytest.approx(1 / 2)
    assert "iou/class_3" not in got
    assert got["miou"] == pytest.approx((5 / 8 + 3 / 5 + 1 / 2) / 3)
    assert got["miou_fg"] == pytest.approx((3 / 5 + 1 / 2) / 2)
    assert got["pixel_accuracy"] == pytest.approx(9 / 12)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_batches_equal_numpy_and_sklearn(seed: int) -> None:
    from sklearn.metrics import jaccard_score

    g = torch.Generator().manual_seed(seed)
    num_classes = 6
    ev = tasks.create("segmentation").evaluation()
    truths, preds = [], []
    for _ in range(3):  # accumulated over batches
        truth = torch.randint(0, num_classes - 1, (2, 9, 7), generator=g)  # class 5 never true...
        noise = torch.randint(0, num_classes - 1, (2, 9, 7), generator=g)  # ...nor predicted
        pred = torch.where(torch.rand(2, 9, 7, generator=g) < 0.6, truth, noise)
        ev.update(_logits_for(pred, num_classes), truth, torch.tensor(1.0))
        truths.append(truth.numpy())
        preds.append(pred.numpy())
    truth_np, pred_np = np.concatenate(truths).ravel(), np.concatenate(preds).ravel()
    got = ev.compute()
    miou, miou_fg, iou = _numpy_miou(truth_np, pred_np, num_classes)
    assert got["miou"] == pytest.approx(miou, rel=1e-6)
    assert got["miou_fg"] == pytest.approx(miou_fg, rel=1e-6)
    assert got["miou"] == pytest.approx(jaccard_score(truth_np, pred_np, average="macro"), rel=1e-6)
    per_class = jaccard_score(truth_np, pred_np, average=None)
    for k, value in enumerate(per_class):
        assert got[f"iou/class_{k}"] == pytest.approx(value, rel=1e-6)
        assert value == pytest.approx(iou[k])
    assert "iou/class_5" not in got and math.isnan(iou[5])
    assert got["pixel_accuracy"] == pytest.approx(float((truth_np == pred_np).mean()))
    assert got["loss"] == pytest.approx(1.0)


def test_ignored_pixels_are_neither_scored_nor_trained() -> None:
    truth = torch.tensor([[[0, 1], [255, 1]]])
    logits = _logits_for(torch.tensor([[[0, 1], [1, 0]]]), 2)
    task = Segmentation(ignore_index=255, dice_weight=1.0)
    ev = task.evaluation()
    loss = task.loss(logits, truth)
    ev.update(logits, truth, loss)
    got = ev.compute()
    assert got["iou/class_0"] == pytest.approx(1 / 2) and got["iou/class_1"] == pytest.approx(1 / 2)
    expected_ce = F.cross_entropy(logits, truth, ignore_index=255)
    assert torch.isfinite(loss) and loss > expected_ce


def test_losses() -> None:
    truth = torch.randint(0, 3, (2, 5, 5))
    logits = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(Segmentation().loss(logits, truth), F.cross_entropy(logits, truth))
    weighted = F.cross_entropy(logits, truth, weight=torch.tensor([0.1, 1.0, 1.0]))
    torch.testing.assert_close(Segmentation(background_weight=0.1).loss(logits, truth), weighted)
    assert dice_loss(_logits_for(truth, 3) * 10, truth) < 1e-3  # a confident perfect prediction
    assert dice_loss(_logits_for((truth + 1) % 3, 3) * 10, truth) > 0.9  # all wrong (eps keeps it below 1)
    with pytest.raises(ValueError, match="dice_weight"):
        Segmentation(dice_weight=-1)
    with pytest.raises(ValueError, match="background_weight"):
        Segmentation(background_weight=0)


def test_segmentation_recipe_runs_end_to_end(tmp_path: Path, repo_root: Path) -> None:
    overrides = {
        "data.source": "digits",
        "data.num_train": 40,
        "data.num_test": 8,
        "data.canvas_size": 32,
        "data.batch_size": 16,
        "model.name": "unet_tiny",
        "trainer.epochs": 1,
    }
    result = ember.fit(
        repo_root / "configs" / "digit-segment.yaml", overrides=overrides, runs_dir=tmp_path / "runs"
    )
    for key in ("val/miou", "val/miou_fg", "test/miou", "test/pixel_accuracy"):
        assert 0.0 <= result.metrics[key] <= 1.0
    assert result.steps == 3  # 36 training scenes in batches of 16
