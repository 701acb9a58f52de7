"""What every dataset builder returns: a `DataBundle` of train/test parts, often `ArrayData` in memory.

Conventions, the same for every registered dataset:

- Images are ``x`` float32 of shape ``(N, C, H, W)``, contiguous, scaled to ``[0, 1]`` and *not*
  standardized. Standardizing would need statistics of the training part, which is only known after
  the validation split; models that want zero-mean inputs put a normalization layer first.
- Tables are ``x`` float32 of shape ``(N, F)``, values as read.
- Labels are ``y`` int64 ``(N,)`` in ``[0, num_classes)`` for classification, float32 for regression.

Example:
    >>> import torch
    >>> data = ArrayData(torch.rand(10, 1, 8, 8), torch.arange(10) % 2)
    >>> len(data.subset(torch.tensor([0, 2, 4])))
    3
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["TASKS", "ArrayData", "DataBundle", "DataError"]

TASKS = ("classification", "regression")


class DataError(ValueError):
    """Data that cannot be read as asked: the message names the file (and row) and what was expected."""


@dataclass
class ArrayData:
    """A whole split held as two tensors: the fast path for data that fits in memory.

    It is also a map-style ``Dataset`` (``data[i] -> (x[i], y[i])``), so anything that takes a
    dataset takes it.

    Args:
        x: inputs, float32 ``(N, C, H, W)`` for images in ``[0, 1]`` or ``(N, F)`` for tables.
        y: targets, int64 ``(N,)`` class indices or float32 ``(N,)`` / ``(N, K)`` for regression.

    Example:
        >>> import torch
        >>> data = ArrayData(torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]))
        >>> data.subset([1, 3]).y.tolist()
        [1, 1]
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise DataError(
                f"x and y must have one row per example; got x {tuple(self.x.shape)} and y {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]

    def subset(self, idx: np.ndarray | torch.Tensor | list[int]) -> ArrayData:
        """The examples at ``idx`` (in that order), as a new contiguous `ArrayData`.

        Args:
            idx: integer indices, e.g. one entry of `split_indices`.

        Returns:
            ArrayData whose tensors are copies (``index_select``), not views.
        """
        index = torch.as_tensor(np.asarray(idx, dtype=np.int64)).to(self.x.device)
        return ArrayData(self.x.index_select(0, index), self.y.index_select(0, index.to(self.y.device)))


@dataclass
class DataBundle:
    """One dataset as loaded: the training pool, its own test split if any, and what it holds.

    Args:
        train: the training pool; the validation split is carved out of it later (`split_indices`).
        test: the dataset's official test split, or None when it has none.
        num_classes: number of classes, None for regression.
        classes: class names, index ``i`` naming label ``i``; None for regression.
        input_shape: shape of one input, ``(C, H, W)`` for images, ``(F,)`` for tables.
        task: ``"classification"`` or ``"regression"``.
        name: the registered name it was loaded by.
        groups: optional group id of each ``train`` example (e.g. the document a paragraph comes
            from); validation and test splits then take whole groups, never part of one.

    Example:
        >>> from ember.data import load_dataset
        >>> bundle = load_dataset("digits")
        >>> bundle.input_shape, bundle.num_classes
        ((1, 8, 8), 10)
    """

    train: ArrayData | Dataset
    test: ArrayData | Dataset | None
    num_classes: int | None
    classes: list[str] | None
    input_shape: tuple[int, ...]
    task: str
    name: str
    groups: np.ndarray | None = None


def images_to_unit(images: np.ndarray, scale: float) -> torch.Tensor:
    """uint8-like ``(N, H, W)`` or ``(N, C, H, W)`` array → float32 ``(N, C, H, W)`` tensor in [0, 1]."""
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[:, None]
    # one float32 copy divided in place: 70k images never pass through float64 (twice the memory)
    out = np.array(array, dtype=np.float32, order="C")
    out /= np.float32(scale)
    return torch.from_numpy(out)


def class_bundle(
    name: str,
    train: ArrayData,
    test: ArrayData | None,
    classes: list[str],
) -> DataBundle:
    """A classification `DataBundle` whose input shape is read off ``train.x``."""
    return DataBundle(
        train=train,
        test=test,
        num_classes=len(classes),
        classes=classes,
        input_shape=tuple(train.x.shape[1:]),
        task="classification",
        name=name,
    )


def existing_path(path: str | Path, what: str) -> Path:
    """``path`` as a Path, or FileNotFoundError naming it (``what`` says what it should have been)."""
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise FileNotFoundError(f"{what} {resolved} does not exist")
    return resolved
