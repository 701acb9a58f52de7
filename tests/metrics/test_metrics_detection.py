"""Weighted COCO mAP against pycocotools itself, and the detection baselines on hand-made scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ember.evaluate.stats import bootstrap
from ember.metrics.coco import mean_average_precision
from ember.metrics.detection import NAMES, class_prior, components_detector, detection_statistics


def _scenes(n: int, seed: int, *, k: int = 4, junk: int = 6) -> tuple[list, list]:
    """Random truth; detections: jittered truth (sometimes mislabelled) plus low-scoring junk boxes."""
    g = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(n):
        m = int(g.integers(0, 4))
        xy = g.uniform(0, 40, (m, 2))
        boxes = np.c_[xy, xy + g.uniform(6, 14, (m, 2))]
        labels = g.integers(0, k, m)
        targets.append(
            {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}
        )
        near = boxes + g.normal(0, 1.2, boxes.shape)
        named = np.where(g.random(m) < 0.85, labels, g.integers(0, k, m))
        far = g.uniform(0, 50, (junk, 2))
        preds.append({
            "boxes": torch.tensor(np.r_[near.reshape(-1, 4), np.c_[far, far + 8]], dtype=torch.float32),
            "scores": torch.tensor(np.r_[g.uniform(0.3, 1, m), g.uniform(0, 0.7, junk)], dtype=torch.float32),
            "labels": torch.tensor(np.r_[named, g.integers(0, k, junk)]).long(),
        })  # fmt: skip
    return preds, targets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_ones_weights_reproduce_cocoeval(seed: int) -> None:
    preds, targets = _scenes(25, seed)
    point = detection_statistics(preds, targets)(np.ones((1, 25)))
    expected = mean_average_precision(preds, targets)
    for name in NAMES:
        assert point[name][0] == pytest.approx(expected[name], abs=1e-12), name


def test_integer_weights_equal_cocoeval_on_repeated_images() -> None:
    preds, targets = _scenes(12, 3)
    weights = np.array([[0, 2, 1, 3, 0, 1, 1, 0, 2, 1, 0, 1], [1] * 6 + [0] * 6], dtype=np.float64)
    got = detection_statistics(preds, targets)(weights)
    for row, w in enumerate(weights):
        index = [i for i, count in enumerate(w.astype(int)) for _ in range(count)]
        expected = mean_average_precision([preds[i] for i in index], [targets[i] for i in index])
        for name in NAMES:
            assert got[name][row] == pytest.approx(expected[name], abs=1e-12), (row, name)


def test_classes_without_truth_or_detections_and_empty_cases() -> None:
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    truth = [{"boxes": box, "labels": torch.tensor([1])}, {"boxes": box, "labels": torch.tensor([2])}]
    found = [
        {"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])},
        {"boxes": box, "scores": torch.tensor([0.8]), "labels": torch.tensor([3])},  # class 3: no truth
    ]
    stats = detection_statistics(found, truth)
    both = stats(np.array([[1.0, 1.0], [2.0, 0.0], [0.0, 2.0]]))
    # class 1 found perfectly, class 2 missed: AP 1 and 0; class 3 has no truth and does not count
    assert both["map50"].tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert both["map50"][0] == pytest.approx(mean_average_precision(found, truth)["map50"])
    empty = [
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    ] * 2
    assert detection_statistics(empty, truth)(np.ones((1, 2)))["map"].tolist() == [0.0]
    no_truth = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    assert np.isnan(detection_statistics(found, no_truth)(np.ones((1, 2)))["map50"]).all()


def test_interval_contains_the_estimate_and_narrows_with_more_images() -> None:
    small, large = _scenes(30, 4), _scenes(300, 4)
    ci_small = bootstrap(detection_statistics(*small), 30, n_resamples=300)["map50"]
    ci_large = bootstrap(detection_statistics(*large), 300, n_resamples=300)["map50"]
    for ci in (ci_small, ci_large):
        assert ci.low <= ci.value <= ci.high
    assert ci_large.high - ci_large.low < 0.6 * (ci_small.high - ci_small.low)


def _canvas(shapes: list[tuple[int, int, int, int, int]], size: int = 24) -> tuple[np.ndarray, dict]:
    """Blank canvas with filled rectangles (x0, y0, x1, y1, label); "1" is a bar, others squares."""
    image = np.zeros((size, size), np.float32)
    for x0, y0, x1, y1, _ in shapes:
        image[y0:y1, x0:x1] = 1.0
    boxes = torch.tensor([s[:4] for s in shapes], dtype=torch.float32).reshape(-1, 4)
    return image, {"boxes": boxes, "labels": torch.tensor([s[4] for s in shapes])}


def test_components_detector_on_hand_made_scenes() -> None:
    # class 0: tall thin bars; class 1: squares. Training scenes hold both at several places.
    train = [_canvas([(1 + i, 2, 3 + i, 12, 0), (12, 4 + i, 18, 10 + i, 1)]) for i in range(6)]
    image, truth = _canvas([(3, 10, 5, 20, 0), (14, 2, 20, 8, 1)])
    found, text = components_detector(train, [image], num_classes=2, min_pixels=4)
    boxes, scores, labels = found[0]["boxes"], found[0]["scores"], found[0]["labels"]
    assert boxes.shape == (4, 4) and labels.tolist() == [0, 1, 0, 1]  # each box once per class
    top = scores.view(2, 2).argmax(dim=1)  # components come in raster order: the square first
    assert boxes[::2].tolist() == truth["boxes"].flip(0).tolist() and top.tolist() == [1, 0]
    assert scores.view(2, 2).sum(dim=1).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    assert mean_average_precision(found, [truth])["map"] == pytest.approx(1.0)
    assert "12 training-box crops" in text
    # a speck under min_pixels is not a box
    speck = image.copy()
    speck[0, 0] = 1.0
    assert len(components_detector(train, [speck], num_classes=2, min_pixels=4)[0][0]["boxes"]) == 4


def test_class_prior_by_hand() -> None:
    train = [
        {"boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 6.0, 8.0]]), "labels": torch.tensor([1, 1])},
        {"boxes": torch.tensor([[10.0, 10.0, 20.0, 30.0]]), "labels": torch.tensor([0])},
    ]
    found, _ = class_prior(train, 3, num_classes=3)
    assert len(found) == 3 and found[0]["labels"].tolist() == [0, 1]  # class 2 never seen: no box
    assert found[2]["boxes"].tolist() == [[10.0, 10.0, 20.0, 30.0], [1.0, 1.0, 5.0, 6.0]]
    assert found[1]["scores"].tolist() == pytest.approx([1 / 3, 2 / 3])


def test_components_detector_chooses_its_ink_threshold_on_held_out_training_images() -> None:
    def bridged(i: int) -> tuple[np.ndarray, dict]:
        image, truth = _canvas([(1 + i % 4, 2, 3 + i % 4, 12, 0), (12, 4 + i % 5, 18, 10 + i % 5, 1)])
        image[6, 3 + i % 4 : 12] = np.maximum(image[6, 3 + i % 4 : 12], 0.05)  # a faint smear joins them
        return image, truth

    train = [bridged(i) for i in range(18)]  # 15 teach the classifier, 3 choose the threshold
    image, truth = bridged(20)
    found, text = components_detector(train, [image], num_classes=2, min_pixels=4)
    assert "inked pixels (> 0.1, the best mAP@.5 of 0, 0.1, 0.25, 0.4 on 3 held-out training images" in text
    assert mean_average_precision(found, [truth])["map50"] == pytest.approx(1.0)
    merged, _ = components_detector(train, [image], num_classes=2, min_pixels=4, thresholds=(0.0,))
    assert len(merged[0]["boxes"]) == 2  # at 0 the smear makes one box of both
