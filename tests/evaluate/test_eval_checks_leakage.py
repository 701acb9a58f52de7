"""Leakage: planted duplicates in digits are found, none are invented, label-revealing features are caught."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ember.data import load_dataset
from ember.evaluate.leakage import (
    exact_duplicates,
    feature_leakage,
    find_duplicates,
    perceptual_hash,
)

DIRECTIONS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    bundle = load_dataset("digits")
    return bundle.train.x.numpy(), bundle.train.y.numpy()  # (1797, 1, 8, 8) in [0, 1]


def shift_image(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move by (dy, dx) pixels; what enters is background (0), what leaves is lost."""
    out = np.zeros_like(image)
    h, w = image.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def aligned_difference(a: np.ndarray, b: np.ndarray, max_shift: int = 1, outliers: int = 1) -> float:
    """The plain definition, pair by pair: over shifts, the smallest largest pixel difference once
    the ``outliers`` largest are set aside (1 of the 64 pixels, as find_duplicates' default)."""
    return min(
        float(np.sort(np.abs(shift_image(a, dy, dx) - b).ravel())[-1 - outliers])
        for dy in range(-max_shift, max_shift + 1)
        for dx in range(-max_shift, max_shift + 1)
    )


def plant(digits: tuple[np.ndarray, np.ndarray], per_kind: int = 30, sigma: float = 0.03, seed: int = 0):  # type: ignore[no-untyped-def]
    """Split digits 1400 / 397 and overwrite test rows with copies of train rows: exact, noisy
    (Gaussian noise of std ``sigma``, clipped to [0, 1]), shifted one pixel, shifted and noisy."""
    x, _ = digits
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    train, test = x[order[:1400]].copy(), x[order[1400:]].copy()
    sources = rng.choice(len(train), 4 * per_kind, replace=False)
    targets = rng.choice(len(test), 4 * per_kind, replace=False)
    kinds: dict[str, list[tuple[int, int]]] = {"exact": [], "noise": [], "shift": [], "shift+noise": []}
    for n, (s, t) in enumerate(zip(sources, targets)):
        kind = list(kinds)[n // per_kind]
        image = train[s].copy()
        if "shift" in kind:
            image = shift_image(image, *DIRECTIONS[n % len(DIRECTIONS)])
        if "noise" in kind:
            image = np.clip(image + rng.normal(0, sigma, image.shape), 0, 1).astype(np.float32)
        test[t] = image
        kinds[kind].append((int(s), int(t)))
    return train, test, kinds


def recall(found: set[tuple[int, int]], planted: list[tuple[int, int]]) -> float:
    return sum(p in found for p in planted) / len(planted)


def test_planted_duplicates_in_digits_are_found(digits: tuple[np.ndarray, np.ndarray]) -> None:
    train, test, kinds = plant(digits)
    found = find_duplicates(train, test)
    exact, near = set(map(tuple, found.exact.tolist())), set(map(tuple, found.near.tolist()))
    assert found.method == "pixel"
    assert recall(exact, kinds["exact"]) == 1.0
    for kind in ("noise", "shift", "shift+noise"):
        assert recall(near, kinds[kind]) >= 0.9, kind
    # every other pair reported is genuinely near by the plain pixel definition
    for i, j in (exact | near) - {p for pairs in kinds.values() for p in pairs}:
        assert aligned_difference(train[i], test[j]) <= found.tolerance + 1e-6


def test_recall_at_stronger_noise(digits: tuple[np.ndarray, np.ndarray]) -> None:
    # noise of std 0.05 (0.8 grey levels of 16): one pixel in six copies moves by more than 0.15,
    # which the one spare pixel absorbs; two such pixels in one copy (~1%) lose it
    train, test, kinds = plant(digits, sigma=0.05, seed=1)
    found = find_duplicates(train, test)
    near = set(map(tuple, found.near.tolist()))
    assert found.outliers == 1
    assert recall(near, kinds["noise"]) >= 0.9
    assert recall(near, kinds["shift+noise"]) >= 0.9
    strict = set(map(tuple, find_duplicates(train, test, outliers=0).near.tolist()))
    assert strict <= near


def test_unmodified_digits_have_no_invented_duplicates(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = digits
    found = find_duplicates(x)  # all 1,797 x 1,796 / 2 pairs, within the set
    assert len(found.exact) == 0
    # whatever is reported must be near by the plain definition; on digits every distinct pair
    # differs by 3/16 or more in at least two pixels even after alignment, so nothing is
    for (i, j), d in zip(found.near.tolist(), found.distance.tolist()):
        assert aligned_difference(x[i], x[j]) == pytest.approx(d, abs=1e-6) and d <= found.tolerance
    assert len(found.near) == 0


def test_perceptual_hash_path_finds_the_same_planted_pairs(digits: tuple[np.ndarray, np.ndarray]) -> None:
    train, test, kinds = plant(digits, per_kind=15, seed=2)
    found = find_duplicates(train, test, method="phash")
    near = set(map(tuple, found.near.tolist()))
    assert recall(set(map(tuple, found.exact.tolist())), kinds["exact"]) == 1.0
    for kind in ("noise", "shift", "shift+noise"):
        assert recall(near, kinds[kind]) >= 0.9, kind
    hashes = perceptual_hash(torch.from_numpy(train[:5]))
    assert hashes.shape == (5, 63) and hashes.dtype == torch.bool


def test_embedding_candidates_are_checked_on_the_inputs(digits: tuple[np.ndarray, np.ndarray]) -> None:
    train, test, kinds = plant(digits, per_kind=10, seed=3)
    # an "embedding" that is the blurred image: it proposes noisy copies (and thousands of
    # look-alikes, which the check on the inputs throws out)
    pool = torch.nn.AvgPool2d(3, stride=1, padding=1)
    embed = [pool(torch.from_numpy(a)).reshape(len(a), -1).numpy() for a in (train, test)]
    found = find_duplicates(train, test, method="embedding", embeddings=(embed[0], embed[1]), similarity=0.98)
    near = set(map(tuple, found.near.tolist()))
    assert recall(near, kinds["noise"]) == 1.0
    for i, j in near:  # verification keeps only pairs near on the inputs themselves
        assert aligned_difference(train[i], test[j]) <= found.tolerance + 1e-6


def test_tables_exact_and_near() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 6))
    b = np.concatenate([a[:3], a[3:5] + 0.001, rng.normal(size=(10, 6))])
    found = find_duplicates(a, b)
    assert found.exact.tolist() == [[0, 0], [1, 1], [2, 2]]
    assert found.near[:, 0].tolist() == [3, 4] and found.max_shift == 0
    within = find_duplicates(np.concatenate([a, a[:2]]))
    assert within.exact.tolist() == [[0, 200], [1, 201]]
    assert exact_duplicates(np.array([[0.0], [-0.0]])).tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="same shape|one shape"):
        find_duplicates(a, b[:, :3])
    with pytest.raises(ValueError, match="needs images"):
        find_duplicates(a, b, method="phash")


def test_feature_leakage(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    flat = x.reshape(len(x), -1).copy()
    assert feature_leakage(flat, y) == []  # no pixel gives the digit away
    rng = np.random.default_rng(0)
    flat[:, 20] = (y * 7) % 10 + rng.random(len(y)) * 0.5  # the label, recoded and jittered
    flat[:, 40] = np.arange(len(y))  # a row id: unique per row, but unrelated to the label
    found = feature_leakage(flat, y)
    assert [f["feature"] for f in found] == [20] and found[0]["score"] > 0.99
    target = flat[:, 20] * 3.0 + rng.normal(0, 0.01, len(y))  # regression: R² instead of accuracy
    assert feature_leakage(flat, target)[0]["metric"] == "r2"
    skewed = np.zeros(500, dtype=np.int64)
    skewed[:5] = 1  # 99% one class: a useless feature reaches 0.99 by guessing, so it is not flagged
    assert feature_leakage(rng.random((500, 3)), skewed) == []
