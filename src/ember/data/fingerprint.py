"""Content fingerprints of data: sha256 over dtype, shape and bytes, the same on every machine.

A run records the fingerprint of its data and of its split indices, so "same data?" is a string
comparison. Tensors and numpy arrays of equal dtype, shape and values fingerprint the same.

Example:
    >>> import numpy as np, torch
    >>> fingerprint(np.arange(3)) == fingerprint(torch.arange(3))
    True
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ember.data.bundle import ArrayData

__all__ = ["fingerprint", "fingerprint_dataset", "fingerprint_indices"]

VERSION = b"ember-fingerprint-v1\n"  # bump if the byte layout below ever changes


def fingerprint(*arrays: torch.Tensor | np.ndarray) -> str:
    """sha256 hex digest of the arrays' dtypes, shapes and bytes, in order.

    Bytes are taken little-endian and C-ordered, so the digest depends on values only, not on
    memory layout, device or machine.

    Args:
        *arrays: tensors (any device, any dtype incl. bfloat16) or numpy arrays.

    Returns:
        64 hex characters.

    Example:
        >>> fingerprint(np.zeros(2)) == fingerprint(np.zeros(3))
        False
    """
    digest = hashlib.sha256(VERSION)
    for array in arrays:
        _update(digest, array)
    return digest.hexdigest()


def fingerprint_indices(idx: np.ndarray | torch.Tensor | list[int]) -> str:
    """Fingerprint of an index set, as int64 (so int32 and int64 copies agree).

    Example:
        >>> fingerprint_indices([0, 2]) == fingerprint_indices(np.array([0, 2], dtype=np.int32))
        True
    """
    if isinstance(idx, torch.Tensor):
        idx = idx.detach().cpu().numpy()
    return fingerprint(np.asarray(idx, dtype=np.int64))


def fingerprint_dataset(data: ArrayData | Dataset) -> str:
    """Fingerprint of a whole data set.

    `ArrayData` hashes its two tensors (fast: one pass over memory, ~1 GB/s). Any other
    ``Dataset`` is read item by item, ``data[0]`` to ``data[len - 1]``, and every tensor, array
    and number in each item is hashed: that costs one full pass of ``__getitem__`` (decoding every
    image of an image dataset), so compute it once per dataset and record it.

    Args:
        data: `ArrayData` or a map-style dataset with ``__len__``.

    Returns:
        64 hex characters.

    Example:
        >>> data = ArrayData(torch.zeros(2, 3), torch.tensor([0, 1]))
        >>> fingerprint_dataset(data) == fingerprint(data.x, data.y)
        True
    """
    if isinstance(data, ArrayData):
        return fingerprint(data.x, data.y)
    digest = hashlib.sha256(VERSION)
    for index in range(len(data)):  # type: ignore[arg-type]
        _update_item(digest, data[index])
    return digest.hexdigest()


def _update_item(digest: Any, item: Any) -> None:
    """Hash the leaves of one dataset item: tensors, arrays, numbers, strings, nested in tuples/dicts."""
    if isinstance(item, torch.Tensor | np.ndarray):
        _update(digest, item)
    elif isinstance(item, Mapping):
        for key in sorted(item, key=str):
            digest.update(repr(key).encode())
            _update_item(digest, item[key])
    elif isinstance(item, list | tuple):
        digest.update(f"seq{len(item)}".encode())
        for leaf in item:
            _update_item(digest, leaf)
    elif isinstance(item, bool | int | float | str | bytes) or item is None:
        digest.update(repr(item).encode())
    else:
        _update(digest, np.asarray(item))  # e.g. a PIL image


def _update(digest: Any, array: torch.Tensor | np.ndarray) -> None:
    if isinstance(array, torch.Tensor):
        tensor = array.detach().cpu().contiguous()
        dtype = str(tensor.dtype).removeprefix("torch.")
        # a byte view, no copy; works for every dtype, bfloat16 included, which numpy cannot hold
        raw = tensor.reshape(-1).view(torch.uint8).numpy()
        shape = tuple(tensor.shape)
    else:
        numpy_array = np.ascontiguousarray(array)
        if numpy_array.dtype.byteorder == ">":
            numpy_array = numpy_array.astype(numpy_array.dtype.newbyteorder("<"))
        dtype = numpy_array.dtype.name
        raw = numpy_array.reshape(-1).view(np.uint8)
        shape = numpy_array.shape
    digest.update(f"{dtype}{shape}{raw.size}\n".encode())
    digest.update(raw)
