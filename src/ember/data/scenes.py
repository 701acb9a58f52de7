"""Detection and segmentation scenes made of real digit crops, with exact boxes and masks.

No real detection set can be fetched offline (see DATA.md), so scenes are composed: 1 to 5 real
MNIST digits (or Fashion-MNIST items) are cropped to their non-zero pixels and pasted on a blank
64x64 canvas, so every box and every mask pixel is known exactly. Scene ``i`` of a split is a pure
function of ``(seed, split, i)``: nothing is stored, any scene can be rebuilt anywhere, and the loader
may fetch scenes in any order. Test scenes use only digits held out from the training scenes.

Registered datasets (``data.name`` in a config):

- ``digit-scenes``: items ``(image, {"boxes", "labels"})`` for detection. ``image`` is float32
  ``(1, 64, 64)`` in [0, 1]; ``boxes`` float32 ``(max_digits, 4)`` in ``xyxy`` pixel coordinates
  (pixel ``j`` spans ``[j, j + 1)``, so a digit whose ink covers columns 3..7 has ``x0=3, x1=8``);
  ``labels`` int64 ``(max_digits,)``, the class (digit 0..9), padded with ``-1`` where there are fewer
  digits. Fixed shapes let torch's default collate batch them.
- ``digit-segments``: items ``(image, mask)``; ``mask`` int64 ``(64, 64)`` with 0 for background and
  ``1 + class`` (1..10) where a digit's own intensity is at least ``mask_threshold``; where two
  digits overlap, the pixel goes to the brighter one (the canvas itself is their maximum).

Example:
    >>> from ember.data import load_dataset
    >>> bundle = load_dataset("digit-scenes", num_train=8, num_test=4)
    >>> image, target = bundle.train[0]
    >>> image.shape, target["boxes"].shape, bundle.num_classes
    (torch.Size([1, 64, 64]), torch.Size([5, 4]), 10)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from ember.data.bundle import ArrayData, DataBundle, DataError
from ember.data.datasets import load_dataset, register_dataset

__all__ = ["DigitPool", "DigitScenes", "Scene", "SceneConfig", "digit_pools", "render_scene"]

_SPLIT_IDS = {"train": 0, "test": 1}
SOURCES = ("mnist-10k", "fashion-mnist", "digits")


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are composed."""

    canvas_size: int = 64
    """Side of the square canvas in pixels."""
    min_digits: int = 1
    """Fewest digits a scene asks for."""
    max_digits: int = 5
    """Most digits a scene asks for (also the padded length of ``boxes`` and ``labels``)."""
    max_overlap: float = 0.25
    """Largest share of the smaller of two boxes that the other may cover (limits occlusion)."""
    mask_threshold: float = 0.5
    """A pixel is in a digit's mask where that digit's own intensity is at least this."""
    attempts: int = 30
    """Placements tried per digit before it is left out (a crowded scene then has fewer)."""


class DigitPool:
    """Digit images cropped to their non-zero pixels, with their labels.

    Args:
        images: uint8 or float ``(N, H, W)`` (or ``(N, 1, H, W)``) grey images, 0 = background.
        labels: int ``(N,)`` class per image.
        index: where each image sits in its source data set (default ``0..N-1``), kept in
            ``self.index`` so pools can be checked for disjointness.

    Example:
        >>> pool = DigitPool(np.pad(np.ones((1, 2, 3)), ((0, 0), (1, 1), (2, 0))), np.array([7]))
        >>> pool.crop(0).shape
        (2, 3)
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, index: np.ndarray | None = None) -> None:
        array = np.asarray(images, dtype=np.float32)
        if array.ndim == 4:
            array = array[:, 0]
        if array.ndim != 3 or len(array) != len(labels):
            raise DataError(f"expected (N, H, W) images and N labels; got {array.shape} and {len(labels)}")
        if array.max(initial=0.0) > 1.0:
            array = array / 255.0
        ink = array > 0
        rows, cols = np.any(ink, axis=2), np.any(ink, axis=1)  # (N, H), (N, W)
        keep = np.any(rows, axis=1)  # a blank image has no box: leave it out
        self.images = array[keep]
        self.labels = np.asarray(labels, dtype=np.int64)[keep]
        self.index = (np.arange(len(array)) if index is None else np.asarray(index))[keep]
        rows, cols = rows[keep], cols[keep]
        h, w = array.shape[1:]
        # first and one-past-last inked row / column of every image
        self.top = rows.argmax(axis=1)
        self.bottom = h - rows[:, ::-1].argmax(axis=1)
        self.left = cols.argmax(axis=1)
        self.right = w - cols[:, ::-1].argmax(axis=1)

    def __len__(self) -> int:
        return len(self.labels)

    def crop(self, i: int) -> np.ndarray:
        """Image ``i`` cut to its tight box, float32 ``(h, w)`` in [0, 1]."""
        return self.images[i, self.top[i] : self.bottom[i], self.left[i] : self.right[i]]


@dataclass
class Scene:
    """One rendered scene: the canvas, its objects' boxes and classes, and the class mask."""

    image: np.ndarray
    """float32 ``(S, S)`` in [0, 1]."""
    boxes: np.ndarray
    """float32 ``(n, 4)`` tight ``xyxy`` boxes in pixels."""
    labels: np.ndarray
    """int64 ``(n,)`` class of each box."""
    mask: np.ndarray
    """int64 ``(S, S)``: 0 background, ``1 + class`` on a digit's pixels."""


def _overlaps(box: np.ndarray, placed: list[np.ndarray], limit: float) -> bool:
    """Whether ``box`` covers more than ``limit`` of the smaller box of any placed one."""
    for other in placed:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw <= 0 or ih <= 0:
            continue
        smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
        if iw * ih > limit * smaller:
            return True
    return False


def render_scene(pool: DigitPool, config: SceneConfig, seed: int, split: int, index: int) -> Scene:
    """Compose scene ``index``: a pure function of ``(seed, split, index)`` and the pool.

    Args:
        pool: the digits to draw from.
        config: canvas size, digit count, overlap and mask rules.
        seed: the dataset's seed.
        split: 0 for training scenes, 1 for test scenes (they draw from different pools too).
        index: the scene number.

    Returns:
        The `Scene`, with at least one digit.

    Example:
        >>> pool = DigitPool(np.ones((1, 4, 4)), np.array([3]))
        >>> scene = render_scene(pool, SceneConfig(canvas_size=8, max_digits=1), seed=0, split=0, index=0)
        >>> scene.labels.tolist(), int(scene.mask.max())
        ([3], 4)
    """
    c = config
    rng = np.random.default_rng((seed, split, index))  # SeedSequence: the same on every machine
    size = c.canvas_size
    image = np.zeros((size, size), np.float32)
    owner = np.zeros((size, size), np.float32)  # intensity of the digit that owns each mask pixel
    mask = np.zeros((size, size), np.int64)
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(int(rng.integers(c.min_digits, c.max_digits + 1))):
        i = int(rng.integers(len(pool)))
        crop = pool.crop(i)
        h, w = crop.shape
        if h > size or w > size:
            raise DataError(f"a {h}x{w} digit does not fit a {size}x{size} canvas; raise canvas_size")
        for _ in range(c.attempts):
            y, x = int(rng.integers(size - h + 1)), int(rng.integers(size - w + 1))
            box = np.array([x, y, x + w, y + h], np.float32)
            if not _overlaps(box, boxes, c.max_overlap):
                break
        else:
            continue  # no room left for this digit
        region = (slice(y, y + h), slice(x, x + w))
        np.maximum(image[region], crop, out=image[region])
        mine = (crop >= c.mask_threshold) & (crop > owner[region])
        mask[region][mine] = 1 + int(pool.labels[i])
        np.maximum(owner[region], np.where(mine, crop, 0), out=owner[region])
        boxes.append(box)
        labels.append(int(pool.labels[i]))
    return Scene(image, np.stack(boxes).reshape(-1, 4), np.array(labels, np.int64), mask)


class DigitScenes(Dataset):
    """``count`` scenes generated on demand from a digit pool (see the module docstring).

    Args:
        pool: the digits scenes are made of.
        count: number of scenes.
        target: ``"detection"`` items ``(image, {"boxes", "labels"})`` or ``"segmentation"``
            items ``(image, mask)``.
        seed: scenes are a function of (seed, split, index).
        split: ``"train"`` or ``"test"``; the same index gives different scenes in each.
        config: how scenes are composed.

    Example:
        >>> scenes = DigitScenes(DigitPool(np.ones((1, 4, 4)), np.array([1])), 3, target="segmentation")
        >>> image, mask = scenes[2]
        >>> image.shape, mask.shape
        (torch.Size([1, 64, 64]), torch.Size([64, 64]))
    """

    def __init__(
        self,
        pool: DigitPool,
        count: int,
        *,
        target: Literal["detection", "segmentation"] = "detection",
        seed: int = 0,
        split: Literal["train", "test"] = "train",
        config: SceneConfig | None = None,
    ) -> None:
        if target not in ("detection", "segmentation"):
            raise ValueError(f"target must be 'detection' or 'segmentation'; got '{target}'")
        self.pool, self.count, self.target, self.seed = pool, count, target, seed
        self.split = _SPLIT_IDS[split]
        self.config = config or SceneConfig()

    def __len__(self) -> int:
        return self.count

    def fingerprint(self) -> str:
        """sha256 of all the scenes depend on: the pool's pixels and labels, count, seed, split, config."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.pool.images).tobytes())
        h.update(self.pool.labels.tobytes())
        h.update(repr((self.count, self.target, self.seed, self.split, self.config)).encode())
        return h.hexdigest()

    def scene(self, index: int) -> Scene:
        """The `Scene` behind item ``index`` (with numpy arrays, unpadded)."""
        if not 0 <= index < self.count:
            raise IndexError(f"scene index {index} out of range for {self.count} scenes")
        return render_scene(self.pool, self.config, self.seed, self.split, index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        scene = self.scene(index)
        image = torch.from_numpy(scene.image)[None]  # (1, S, S)
        if self.target == "segmentation":
            return image, torch.from_numpy(scene.mask)
        slots = self.config.max_digits
        boxes = torch.zeros(slots, 4)
        labels = torch.full((slots,), -1, dtype=torch.int64)
        n = len(scene.labels)
        boxes[:n] = torch.from_numpy(scene.boxes)
        labels[:n] = torch.from_numpy(scene.labels)
        return image, {"boxes": boxes, "labels": labels}


def digit_pools(
    source: str = "mnist-10k", *, held_out: float = 0.2, seed: int = 0, progress: bool = True
) -> tuple[DigitPool, DigitPool, list[str]]:
    """Training and test digit pools, disjoint, and the class names.

    Args:
        source: ``"mnist-10k"`` (28x28 MNIST digits), ``"fashion-mnist"`` (28x28 clothing, with its
            own test split) or ``"digits"`` (scikit-learn's 8x8 digits: tiny, always offline, for
            tests). A source without a test split gives a seeded ``held_out`` share to the test pool.
        held_out: share of the source's images kept for test scenes when it has no test split.
        seed: seed of that hold-out draw.
        progress: download progress bar (first use only).

    Returns:
        ``(train_pool, test_pool, classes)``.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}; got '{source}'")
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be in (0, 1); got {held_out}")
    bundle = load_dataset(source) if source == "digits" else load_dataset(source, progress=progress)
    train, test = bundle.train, bundle.test
    assert isinstance(train, ArrayData) and (test is None or isinstance(test, ArrayData))
    classes = list(bundle.classes or [])
    if test is not None:
        return DigitPool(train.x.numpy(), train.y.numpy()), DigitPool(test.x.numpy(), test.y.numpy()), classes
    x, y = train.x.numpy(), train.y.numpy()
    order = np.random.default_rng((seed, 2)).permutation(len(y))
    n_test = round(held_out * len(y))
    kept, fit = np.sort(order[:n_test]), np.sort(order[n_test:])
    return DigitPool(x[fit], y[fit], fit), DigitPool(x[kept], y[kept], kept), classes


def _bundle(
    target: Literal["detection", "segmentation"],
    *,
    source: str,
    num_train: int,
    num_test: int,
    seed: int,
    held_out: float,
    config: SceneConfig,
    progress: bool,
) -> DataBundle:
    train_pool, test_pool, classes = digit_pools(source, held_out=held_out, seed=seed, progress=progress)
    make = {"target": target, "seed": seed, "config": config}
    train = DigitScenes(train_pool, num_train, split="train", **make)  # type: ignore[arg-type]
    test = DigitScenes(test_pool, num_test, split="test", **make)  # type: ignore[arg-type]
    if target == "segmentation":
        classes = ["background", *classes]
    size = config.canvas_size
    name = "digit-scenes" if target == "detection" else "digit-segments"
    return DataBundle(train, test, len(classes), classes, (1, size, size), target, name)


@register_dataset("digit-scenes")
def digit_scenes(
    *,
    source: str = "mnist-10k",
    num_train: int = 20_000,
    num_test: int = 2_000,
    seed: int = 0,
    held_out: float = 0.2,
    canvas_size: int = 64,
    min_digits: int = 1,
    max_digits: int = 5,
    max_overlap: float = 0.25,
    progress: bool = True,
) -> DataBundle:
    """Detection scenes: real digits on a canvas, each with its tight box and class (10 classes).

    Args:
        source: ``"mnist-10k"``, ``"fashion-mnist"`` or ``"digits"``: where the crops come from.
        num_train: training scenes (the recipe carves validation out of them).
        num_test: test scenes, made only of held-out digits.
        seed: scenes and the digit hold-out are functions of it.
        held_out: share of the source's digits reserved for test scenes (mnist-10k, digits).
        canvas_size, min_digits, max_digits, max_overlap: see `SceneConfig`.
        progress: download progress bar (first use only).
    """
    config = SceneConfig(canvas_size, min_digits, max_digits, max_overlap)
    return _bundle(
        "detection",
        source=source,
        num_train=num_train,
        num_test=num_test,
        seed=seed,
        held_out=held_out,
        config=config,
        progress=progress,
    )


@register_dataset("digit-segments")
def digit_segments(
    *,
    source: str = "mnist-10k",
    num_train: int = 20_000,
    num_test: int = 2_000,
    seed: int = 0,
    held_out: float = 0.2,
    canvas_size: int = 64,
    min_digits: int = 1,
    max_digits: int = 5,
    max_overlap: float = 0.25,
    mask_threshold: float = 0.5,
    progress: bool = True,
) -> DataBundle:
    """Segmentation scenes: the same canvases with a class mask (11 classes: background + 10).

    Args: as for `digit_scenes`, plus ``mask_threshold`` (see `SceneConfig`).
    """
    config = SceneConfig(canvas_size, min_digits, max_digits, max_overlap, mask_threshold)
    return _bundle(
        "segmentation",
        source=source,
        num_train=num_train,
        num_test=num_test,
        seed=seed,
        held_out=held_out,
        config=config,
        progress=progress,
    )
