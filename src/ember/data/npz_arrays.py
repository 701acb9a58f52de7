"""A user's arrays in an ``.npz`` file, read with ``allow_pickle=False``.

Example:
    >>> from ember.data import load_dataset
    >>> bundle = load_dataset("npz", path="data.npz", x="images", y="labels")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ember.data.bundle import TASKS, ArrayData, DataBundle, DataError, existing_path, images_to_unit
from ember.data.datasets import register_dataset

__all__ = ["npz_arrays"]


@register_dataset("npz")
def npz_arrays(
    path: str | Path,
    *,
    x: str = "x",
    y: str = "y",
    x_test: str = "x_test",
    y_test: str = "y_test",
    task: str | None = None,
) -> DataBundle:
    """Arrays saved with ``np.savez``: inputs, targets, optionally a test pair and ``classes``.

    Inputs of 2 dimensions are tables ``(N, F)``; 3 are grey images ``(N, H, W)``; 4 are images
    ``(N, C, H, W)`` (or ``(N, H, W, C)`` when the last axis is 1 or 3 and the second is not).
    uint8 inputs are scaled by 1/255. Integer targets mean classification, float regression,
    unless ``task`` says otherwise. Read with ``allow_pickle=False``: object arrays are refused.

    Args:
        path: the .npz file.
        x, y: keys of the training inputs and targets.
        x_test, y_test: keys of the test pair, used when both are present.
        task: ``"classification"`` or ``"regression"`` to override the guess from y's dtype.

    Example:
        >>> bundle = npz_arrays("data.npz")  # doctest: +SKIP
    """
    file = existing_path(path, "npz file")
    try:
        with np.load(file, allow_pickle=False) as arrays:
            stored = {key: arrays[key] for key in arrays.files}
    except ValueError as error:  # object arrays need pickle, which is never allowed here
        raise DataError(f"cannot read {file}: {error}") from None
    for key in (x, y):
        if key not in stored:
            raise DataError(f"{file} has no array '{key}'; it has: {', '.join(sorted(stored))}")
    if (x_test in stored) != (y_test in stored):
        raise DataError(f"{file} has only one of '{x_test}' and '{y_test}'; store both or neither")
    task = task or ("regression" if np.issubdtype(stored[y].dtype, np.floating) else "classification")
    if task not in TASKS:
        raise DataError(f"task must be one of {TASKS}; got '{task}'")
    pairs = [(stored[x], stored[y])] + ([(stored[x_test], stored[y_test])] if x_test in stored else [])
    for (a, b), (ka, kb) in zip(pairs, ((x, y), (x_test, y_test))):
        _check_arrays(file, a, b, ka, kb)
    datas = [ArrayData(_inputs(a, file), _targets(b, task, file)) for a, b in pairs]
    classes = None
    if task == "classification":
        count = max(int(d.y.max()) + 1 for d in datas if len(d))
        classes = (
            [str(c) for c in stored["classes"]] if "classes" in stored else [str(i) for i in range(count)]
        )
        if len(classes) < count:
            raise DataError(f"{file}: labels go up to {count - 1} but 'classes' names only {len(classes)}")
    return DataBundle(
        train=datas[0],
        test=datas[1] if len(datas) > 1 else None,
        num_classes=len(classes) if classes else None,
        classes=classes,
        input_shape=tuple(datas[0].x.shape[1:]),
        task=task,
        name="npz",
    )


def _check_arrays(file: Path, inputs: np.ndarray, targets: np.ndarray, x: str, y: str) -> None:
    """Examples exist, pair up, and hold only finite numbers (as the CSV reader requires)."""
    if inputs.ndim == 0 or len(inputs) == 0:
        raise DataError(
            f"{file}: array '{x}' holds no examples (shape {inputs.shape}); store at least one row"
        )
    if targets.ndim == 0 or len(targets) != len(inputs):
        raise DataError(
            f"{file}: array '{y}' has shape {targets.shape} but '{x}' has {len(inputs)} examples; "
            "store one target per example"
        )
    for key, array in ((x, inputs), (y, targets)):
        if array.dtype.kind not in "iubf":
            raise DataError(f"{file}: array '{key}' is {array.dtype}; expected numbers")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1))
            raise DataError(
                f"{file}: array '{key}' holds NaN or Inf in {len(bad)} example(s), the first at index "
                f"{bad[0]}; expected finite numbers. Drop or fill those examples first"
            )


def _inputs(array: np.ndarray, file: Path) -> torch.Tensor:
    if array.ndim == 4 and array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
        array = array.transpose(0, 3, 1, 2)  # (N, H, W, C) → (N, C, H, W)
    if array.ndim in (3, 4):
        return images_to_unit(array, 255.0 if array.dtype == np.uint8 else 1.0)
    if array.ndim == 2:
        return torch.from_numpy(np.array(array, dtype=np.float32, order="C"))
    raise DataError(f"{file}: inputs of shape {array.shape} are neither a table (N, F) nor images")


def _targets(array: np.ndarray, task: str, file: Path) -> torch.Tensor:
    if task == "regression":
        return torch.from_numpy(np.array(array, dtype=np.float32, order="C"))
    whole = array.dtype.kind in "iub" or (array.dtype.kind == "f" and np.array_equal(array, np.round(array)))
    if array.ndim != 1 or not whole or (array.size and array.min() < 0):
        raise DataError(
            f"{file}: class labels must be whole numbers >= 0 of shape (N,); got {array.dtype} {array.shape}"
        )
    return torch.from_numpy(array.astype(np.int64))
