"""Per-image mIoU statistics against the task's own torchmetrics numbers, and the baselines by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ember.evaluate.stats import bootstrap
from ember.metrics.segmentation import (
    choose_threshold,
    components_confusion,
    confusion_per_image,
    majority_confusion,
    segmentation_statistics,
)
from ember.tasks.segmentation import Segmentation


def _batch(n: int, seed: int, k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.randint(0, k - 1, (n, 6, 6), generator=g)  # class k-1 never true: only predicted
    logits = torch.randn(n, k, 6, 6, generator=g) + 2.5 * torch.nn.functional.one_hot(mask, k).movedim(-1, 1)
    return logits, mask


def test_all_ones_weights_reproduce_the_task_metrics() -> None:
    logits, mask = _batch(10, 0)
    mask[0, 0, :3] = -100  # ignored pixels count for neither
    task = Segmentation()
    ev = task.evaluation()
    ev.update(logits, mask, task.loss(logits, mask))
    expected = ev.compute()
    confusion = confusion_per_image(logits, mask).numpy()
    assert confusion.shape == (10, 4, 4) and confusion.sum() == 10 * 36 - 3
    got = segmentation_statistics(confusion)(np.ones((1, 10)))
    for name in ("miou", "miou_fg", "pixel_accuracy"):
        assert got[name][0] == pytest.approx(expected[name], abs=1e-6), name


def test_weights_equal_the_task_metrics_on_repeated_images() -> None:
    logits, mask = _batch(6, 1)
    confusion = confusion_per_image(logits, mask).numpy()
    w = np.array([[3.0, 0.0, 1.0, 0.0, 2.0, 0.0]])
    index = [0, 0, 0, 2, 4, 4]
    task = Segmentation()
    ev = task.evaluation()
    ev.update(logits[index], mask[index], task.loss(logits[index], mask[index]))
    assert segmentation_statistics(confusion)(w)["miou"][0] == pytest.approx(ev.compute()["miou"], abs=1e-6)


def test_statistics_by_hand() -> None:
    # image 0: 3 background pixels right, 1 background called class 1; image 1: class 1 half found
    confusion = np.array([[[3, 1], [0, 0]], [[0, 0], [2, 2]]])
    got = segmentation_statistics(confusion)(np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
    # both: bg IoU 3/(3+1+2) = 0.5, class 1 IoU 2/(4+3-2) = 0.4; image 0 alone: 3/4 and 0/1;
    # image 1 alone: background is predicted (union 2) but never true, so its IoU is 0, class 1's 2/4
    assert got["miou"].tolist() == pytest.approx([0.45, 0.375, 0.25])
    assert got["miou_fg"].tolist() == pytest.approx([0.4, 0.0, 0.5])
    assert got["pixel_accuracy"].tolist() == pytest.approx([5 / 8, 3 / 4, 1 / 2])


def test_interval_contains_the_estimate_and_narrows_with_more_images() -> None:
    widths = []
    for n in (20, 400):
        logits, mask = _batch(n, 2)
        ci = bootstrap(
            segmentation_statistics(confusion_per_image(logits, mask).numpy()), n, n_resamples=300
        )["miou"]
        assert ci.low <= ci.value <= ci.high
        widths.append(ci.high - ci.low)
    assert widths[1] < 0.5 * widths[0]


def test_majority_by_hand() -> None:
    train = [np.array([[0, 0], [0, 2]]), np.array([[0, 1], [0, 0]])]
    masks = [np.array([[2, 2], [0, -100]])]
    confusion, top = majority_confusion(train, masks, num_classes=3)
    assert top == 0
    assert confusion[0].tolist() == [[1, 0, 0], [0, 0, 0], [2, 0, 0]]
    got = segmentation_statistics(confusion)(np.ones((1, 1)))
    assert got["miou"][0] == pytest.approx((1 / 3 + 0) / 2)  # class 1 absent from truth and prediction


def _scene(shapes: list[tuple[int, int, int, int, int]], size: int = 20) -> tuple[np.ndarray, np.ndarray]:
    image = np.zeros((size, size), np.float32)
    mask = np.zeros((size, size), np.int64)
    for x0, y0, x1, y1, cls in shapes:
        image[y0:y1, x0:x1] = 0.9
        mask[y0:y1, x0:x1] = cls
    image[image == 0] = 0.02  # a faint background the threshold must cut away
    return image, mask


def test_threshold_and_components_baseline_on_hand_made_scenes() -> None:
    # class 1: tall bars, class 2: wide bars
    train = [_scene([(1 + i, 1, 3 + i, 11, 1), (8, 12 + i % 3, 18, 14 + i % 3, 2)]) for i in range(6)]
    assert choose_threshold([x for x, _ in train], [m for _, m in train]) == 0.05
    evaluated = [_scene([(14, 2, 16, 12, 1), (2, 15, 12, 17, 2)]), _scene([(5, 5, 7, 15, 1)])]
    confusion, text = components_confusion(train, evaluated, num_classes=3)
    assert confusion.sum(axis=(1, 2)).tolist() == [400, 400]
    for c in confusion:  # every pixel right
        assert np.count_nonzero(c - np.diag(np.diagonal(c))) == 0
    got = segmentation_statistics(confusion)(np.ones((1, 2)))
    assert got["miou"][0] == pytest.approx(1.0) and "12 components of 6 training images" in text
