"""split_indices / save_splits / load_splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ember.data import load_splits, save_splits, split_indices

LABELS = np.repeat(np.arange(4), [50, 30, 13, 7])  # unbalanced classes, n = 100


def check_partition(parts: dict[str, np.ndarray], n: int) -> None:
    together = np.concatenate(list(parts.values()))
    assert len(together) == n and np.array_equal(np.sort(together), np.arange(n))  # disjoint and covering
    for idx in parts.values():
        assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)  # documented: sorted ascending


@pytest.mark.parametrize("stratified", [True, False])
def test_disjoint_covering_sizes(stratified: bool) -> None:
    parts = split_indices(LABELS, 100, val_fraction=0.2, test_fraction=0.1, seed=0, stratified=stratified)
    assert sorted(parts) == ["test", "train", "val"]
    check_partition(parts, 100)
    assert (len(parts["val"]), len(parts["test"])) == (20, 10)


def test_stratified_keeps_proportions() -> None:
    parts = split_indices(LABELS, 100, val_fraction=0.2, test_fraction=0.15, seed=3, stratified=True)
    counts = np.bincount(LABELS)
    for name, fraction in (("val", 0.2), ("test", 0.15)):
        got = np.bincount(LABELS[parts[name]], minlength=4)
        assert np.all(np.abs(got - fraction * counts) <= 1), (name, got)


def test_reproducible_by_seed() -> None:
    def split(seed: int) -> dict[str, np.ndarray]:
        return split_indices(LABELS, 100, val_fraction=0.2, test_fraction=0.0, seed=seed, stratified=True)

    first, again, other = split(7), split(7), split(8)
    assert "test" not in first
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["val"], other["val"])


def test_regression_labels_split_randomly() -> None:
    targets = np.linspace(0, 1, 40)
    parts = split_indices(targets, 40, val_fraction=0.25, test_fraction=0.0, seed=0, stratified=True)
    check_partition(parts, 40)
    assert len(parts["val"]) == 10
    assert (
        len(split_indices(None, 40, val_fraction=0.25, test_fraction=0.0, seed=0, stratified=True)["val"])
        == 10
    )


def test_bad_fractions() -> None:
    with pytest.raises(ValueError, match="sum below 1"):
        split_indices(None, 10, val_fraction=0.6, test_fraction=0.5, seed=0, stratified=False)
    with pytest.raises(ValueError, match="labels has 3"):
        split_indices(
            np.zeros(3, dtype=np.int64), 10, val_fraction=0.1, test_fraction=0.0, seed=0, stratified=True
        )


def test_save_load_round_trip(tmp_path: Path) -> None:
    parts = split_indices(LABELS, 100, val_fraction=0.2, test_fraction=0.1, seed=0, stratified=True)
    save_splits(parts, tmp_path / "splits")
    loaded = load_splits(tmp_path / "splits")
    assert sorted(loaded) == sorted(parts) and all(np.array_equal(loaded[k], parts[k]) for k in parts)
    assert sorted(p.name for p in (tmp_path / "splits").iterdir()) == ["test.npy", "train.npy", "val.npy"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_splits(tmp_path / "nowhere")
