"""Digit scenes: exact tight boxes and masks, limited overlap, determinism, held-out test digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ember.data import fetch, load_dataset, make_loader
from ember.data.scenes import DigitPool, DigitScenes, SceneConfig, digit_pools, render_scene


@pytest.fixture(scope="module")
def pools() -> tuple[DigitPool, DigitPool, list[str]]:
    return digit_pools("digits")  # scikit-learn's 8x8 digits: offline, small


def _check_scene(
    image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, mask: np.ndarray, cfg: SceneConfig
) -> None:
    size = cfg.canvas_size
    assert image.shape == mask.shape == (size, size)
    assert cfg.min_digits <= len(boxes) <= cfg.max_digits and len(boxes) == len(labels)
    covered = np.zeros((size, size), bool)
    for x0, y0, x1, y1 in boxes.astype(int):
        assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
        # tight: every edge row and column of the box holds ink
        inside = image[y0:y1, x0:x1]
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        covered[y0:y1, x0:x1] = True
    assert not (image > 0)[~covered].any(), "ink outside every box"
    # the mask marks exactly the pixels at or above the threshold, each with a class boxed there
    np.testing.assert_array_equal(mask > 0, image >= cfg.mask_threshold)
    for y, x in zip(*np.nonzero(mask)):
        holders = [int(c) for (x0, y0, x1, y1), c in zip(boxes, labels) if x0 <= x < x1 and y0 <= y < y1]
        assert mask[y, x] - 1 in holders
    for i in range(len(boxes)):  # limited occlusion
        for j in range(i):
            a, b = boxes[i], boxes[j]
            iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
            assert iw * ih <= cfg.max_overlap * smaller + 1e-6


def test_pool_crops_are_tight() -> None:
    images = np.zeros((2, 6, 7), np.uint8)
    images[0, 1:4, 2:5] = 200
    images[0, 2, 2] = 0  # a hole does not change the box
    images[1, 5, 6] = 9  # one pixel in the corner
    pool = DigitPool(images, np.array([3, 4]))
    assert pool.crop(0).shape == (3, 3) and pool.crop(1).shape == (1, 1)
    assert pool.crop(1)[0, 0] == pytest.approx(9 / 255)
    blank = DigitPool(np.zeros((1, 4, 4)), np.array([1]))
    assert len(blank) == 0  # an image without ink has no box: left out


def test_single_digit_scene_is_exact() -> None:
    images = np.zeros((1, 8, 8), np.float32)
    images[0, 2:6, 3:5] = [[0.2, 0.9], [1.0, 0.4], [0.6, 0.0], [0.1, 0.7]]
    pool = DigitPool(images, np.array([7]))
    cfg = SceneConfig(canvas_size=16, max_digits=1)
    scene = render_scene(pool, cfg, seed=3, split=0, index=0)
    (x0, y0, x1, y1) = scene.boxes[0].astype(int)
    assert (x1 - x0, y1 - y0) == (2, 4)
    np.testing.assert_array_equal(scene.image[y0:y1, x0:x1], pool.crop(0))
    assert scene.image.sum() == pytest.approx(pool.crop(0).sum())
    expected = np.where(scene.image >= 0.5, 8, 0)
    np.testing.assert_array_equal(scene.mask, expected)
    assert scene.labels.tolist() == [7]


def test_scenes_hold_exact_boxes_and_masks(pools: tuple[DigitPool, DigitPool, list[str]]) -> None:
    train_pool, _, _ = pools
    cfg = SceneConfig(canvas_size=32)
    counts = set()
    for index in range(40):
        scene = render_scene(train_pool, cfg, seed=0, split=0, index=index)
        _check_scene(scene.image, scene.boxes, scene.labels, scene.mask, cfg)
        counts.add(len(scene.boxes))
    assert counts == {1, 2, 3, 4, 5}


def test_scenes_are_a_function_of_seed_split_and_index(pools: tuple[DigitPool, DigitPool, list[str]]) -> None:
    train_pool, _, _ = pools
    a = DigitScenes(train_pool, 10, seed=1)
    b = DigitScenes(train_pool, 10, seed=1)
    later_first = b[7]  # any order gives the same scene
    for i in (0, 7, 9):
        ia, ta = a[i]
        ib, tb = b[i]
        assert torch.equal(ia, ib) and torch.equal(ta["boxes"], tb["boxes"])
    assert torch.equal(later_first[0], a[7][0])
    assert not torch.equal(a[0][0], DigitScenes(train_pool, 10, seed=2)[0][0])
    assert not torch.equal(a[0][0], DigitScenes(train_pool, 10, seed=1, split="test")[0][0])
    assert a.fingerprint() == b.fingerprint() != DigitScenes(train_pool, 11, seed=1).fingerprint()
    with pytest.raises(IndexError):
        a[10]


def test_registered_datasets_and_collation() -> None:
    det = load_dataset("digit-scenes", source="digits", num_train=12, num_test=6, canvas_size=32)
    seg = load_dataset("digit-segments", source="digits", num_train=12, num_test=6, canvas_size=32)
    assert (det.task, det.num_classes, det.input_shape) == ("detection", 10, (1, 32, 32))
    assert (seg.task, seg.num_classes, seg.classes[:2]) == ("segmentation", 11, ["background", "0"])
    assert len(det.train) == 12 and det.test is not None and len(det.test) == 6
    images, target = next(iter(make_loader(det.train, batch_size=4, shuffle=True)))
    assert images.shape == (4, 1, 32, 32) and images.dtype == torch.float32
    assert target["boxes"].shape == (4, 5, 4) and target["labels"].shape == (4, 5)
    valid = target["labels"] >= 0
    assert valid[:, 0].all()  # at least one digit each
    assert (target["boxes"][~valid] == 0).all()
    # the same canvases as the segmentation set (same seed, same pools)
    seg_images, masks = next(iter(make_loader(seg.train, batch_size=12, shuffle=False)))
    det_images, det_target = next(iter(make_loader(det.train, batch_size=12, shuffle=False)))
    assert torch.equal(seg_images, det_images) and masks.shape == (12, 32, 32)
    for i in range(12):
        keep = det_target["labels"][i] >= 0
        _check_scene(
            det_images[i, 0].numpy(),
            det_target["boxes"][i][keep].numpy(),
            det_target["labels"][i][keep].numpy(),
            masks[i].numpy(),
            SceneConfig(canvas_size=32),
        )


def test_test_scenes_use_held_out_digits(pools: tuple[DigitPool, DigitPool, list[str]]) -> None:
    train_pool, test_pool, classes = pools
    assert classes == [str(d) for d in range(10)]
    assert set(train_pool.index.tolist()).isdisjoint(test_pool.index.tolist())
    assert len(train_pool) + len(test_pool) == 1797
    assert len(test_pool) == round(0.2 * 1797)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="source must be one of"):
        digit_pools("cifar")
    with pytest.raises(ValueError, match="target must be"):
        DigitScenes(DigitPool(np.ones((1, 2, 2)), np.array([0])), 1, target="pose")  # type: ignore[arg-type]


def test_mnist_scenes_use_real_digits() -> None:
    fetch("mnist-10k", progress=False)  # from the cache, else a pinned, sha256-checked source
    bundle = load_dataset("digit-scenes", num_train=20, num_test=20)
    assert isinstance(bundle.train, DigitScenes) and isinstance(bundle.test, DigitScenes)
    assert len(bundle.train.pool) == 8000 and len(bundle.test.pool) == 2000
    assert set(bundle.train.pool.index.tolist()).isdisjoint(bundle.test.pool.index.tolist())
    for i in range(20):
        scene = bundle.test.scene(i)
        _check_scene(scene.image, scene.boxes, scene.labels, scene.mask, SceneConfig())
        assert ((scene.boxes[:, 2:] - scene.boxes[:, :2]) <= 28).all()
