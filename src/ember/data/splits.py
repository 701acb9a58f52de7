"""Train / validation / test splits as index arrays, seeded, stratified, and saved next to a run.

Splits are computed once and then *saved*: a run records its index files, so reproducing it never
depends on a random generator giving the same stream in a later numpy version.

Example:
    >>> import numpy as np
    >>> labels = np.repeat(np.arange(3), 10)
    >>> parts = split_indices(labels, 30, val_fraction=0.2, test_fraction=0.0, seed=0, stratified=True)
    >>> sorted(parts), len(parts["val"])
    (['train', 'val'], 6)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ember._io import atomic_path

__all__ = ["load_splits", "save_splits", "split_groups", "split_indices"]


def split_indices(
    labels: np.ndarray | None,
    n: int,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    stratified: bool,
) -> dict[str, np.ndarray]:
    """Split ``range(n)`` into disjoint, covering index sets.

    Sizes are ``round(fraction * n)`` for val and test, the rest is train. Stratified splits
    allot each class its share by largest remainders, so every class's val (and test) count is
    within 1 of ``class_count * size / n`` and the totals are exact. Float labels (regression)
    and ``labels=None`` give a plain random split whatever ``stratified`` says.

    Args:
        labels: class label per example, shape ``(n,)``, or None.
        n: number of examples.
        val_fraction: share for validation, in ``[0, 1)``.
        test_fraction: share for test, in ``[0, 1)``; the key "test" exists only when it is > 0.
        seed: the same seed gives the same split; another seed a different one.
        stratified: keep class proportions in every part.

    Returns:
        ``{"train": ..., "val": ..., ["test": ...]}``, each int64 and sorted ascending (order
        within a part carries no information; loaders shuffle).

    Example:
        >>> parts = split_indices(None, 10, val_fraction=0.3, test_fraction=0.0, seed=1, stratified=False)
        >>> len(parts["train"]), len(parts["val"])
        (7, 3)
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction and test_fraction must be in [0, 1) and sum below 1; got {val_fraction} and {test_fraction}"
        )
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries but n is {n}")
    rng = np.random.default_rng(seed)
    n_test, n_val = round(test_fraction * n), round(val_fraction * n)
    label_array = None if labels is None else np.asarray(labels)
    if stratified and label_array is not None and label_array.dtype.kind in "iub":
        test, val = _stratified(label_array, n_test, n_val, rng)
    else:
        order = rng.permutation(n)
        test, val = order[:n_test], order[n_test : n_test + n_val]
    train = np.setdiff1d(np.arange(n), np.concatenate([test, val]), assume_unique=True)
    if len(train) == 0:
        raise ValueError(f"no training examples left out of {n}; lower val_fraction or test_fraction")
    if test_fraction > 0 and len(test) == 0:
        need = math.ceil(0.5 / test_fraction)
        raise ValueError(
            f"too few examples ({n}) for test_fraction={test_fraction:g}: the test split "
            f"would be empty. Give at least {need} examples, a test set of its own, or test_fraction=0"
        )
    parts = {"train": train, "val": np.sort(val)}
    if test_fraction > 0:
        parts["test"] = np.sort(test)
    return {name: idx.astype(np.int64) for name, idx in parts.items()}


def split_groups(
    groups: np.ndarray,
    labels: np.ndarray | None,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    stratified: bool,
) -> dict[str, np.ndarray]:
    """Like `split_indices`, but whole groups go to one part (no document split across parts).

    The fractions count groups, not examples; a stratified split stratifies the groups by the
    label of each group's first example (the documents' genre, say).

    Args:
        groups: group id of each example, shape ``(n,)`` (any integers).
        labels: class label per example, or None.
        val_fraction, test_fraction, seed, stratified: as `split_indices`, over groups.

    Returns:
        ``{"train": ..., "val": ..., ["test": ...]}`` example indices, int64, sorted.

    Example:
        >>> parts = split_groups(np.array([0, 0, 1, 1, 2, 2]), None, val_fraction=0.34,
        ...                      test_fraction=0.0, seed=0, stratified=False)
        >>> len(parts["val"]), len(set(parts["val"] // 2))
        (2, 1)
    """
    groups = np.asarray(groups)
    ids, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    group_labels = None if labels is None else np.asarray(labels)[first]
    parts = split_indices(
        group_labels,
        len(ids),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        stratified=stratified,
    )
    return {name: np.flatnonzero(np.isin(inverse, idx)).astype(np.int64) for name, idx in parts.items()}


def _stratified(
    labels: np.ndarray, n_test: int, n_val: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    classes, counts = np.unique(labels, return_counts=True)
    members = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    test_counts = _allot(counts, n_test, rng)
    val_counts = np.minimum(_allot(counts, n_val, rng), counts - test_counts)
    test = np.concatenate([m[:t] for m, t in zip(members, test_counts)] + [np.empty(0, np.int64)])
    val = np.concatenate(
        [m[t : t + v] for m, t, v in zip(members, test_counts, val_counts)] + [np.empty(0, np.int64)]
    )
    return test, val


def _allot(counts: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``total`` over classes in proportion to ``counts`` (largest remainder, random ties)."""
    exact = counts * (total / counts.sum())
    share = np.floor(exact).astype(np.int64)
    remainder = exact - share
    # random tie-breaking so no class is always the one left short
    order = np.lexsort((rng.random(len(counts)), -remainder))
    share[order[: total - share.sum()]] += 1
    return share


def save_splits(splits: dict[str, np.ndarray], folder: Path | str) -> None:
    """Write each split as ``folder/NAME.npy`` (int64), atomically: a crash leaves old or new, never half.

    Args:
        splits: name → indices, e.g. the result of `split_indices`.
        folder: created if missing; keep it for splits only (`load_splits` reads every .npy).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> save_splits({"train": np.array([0, 2]), "val": np.array([1])}, folder)
        >>> load_splits(folder)["val"].tolist()
        [1]
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, idx in splits.items():
        with atomic_path(folder / f"{name}.npy") as tmp:
            np.save(tmp, np.asarray(idx, dtype=np.int64), allow_pickle=False)


def _load_indices(path: Path) -> np.ndarray:
    try:
        idx = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:  # a damaged or truncated .npy
        raise ValueError(f"split file {path} is damaged: {e}") from None
    if idx.ndim != 1 or idx.dtype.kind not in "iu" or (idx.size and idx.min() < 0):
        raise ValueError(f"split file {path} is damaged: expected indices >= 0, got {idx.dtype} {idx.shape}")
    return idx


def load_splits(folder: Path | str) -> dict[str, np.ndarray]:
    """Read the ``NAME.npy`` index files `save_splits` wrote (never with pickle).

    Args:
        folder: the folder given to `save_splits`.

    Returns:
        name → int64 indices.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"split folder {folder} does not exist")
    # a name starting with "." is a write still under way (ember._io.atomic_path)
    files = [path for path in sorted(folder.glob("*.npy")) if not path.name.startswith(".")]
    splits = {path.stem: _load_indices(path) for path in files}
    if not splits:
        raise FileNotFoundError(f"no split files (NAME.npy) in {folder}")
    return {name: idx.astype(np.int64, copy=False) for name, idx in splits.items()}
