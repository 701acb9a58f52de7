"""fingerprint: stable, layout-independent, sensitive to any change."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from ember.data import ArrayData, fingerprint, fingerprint_dataset, fingerprint_indices


def test_stable_and_pinned() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    # the layout is documented: a version line, then per array "dtype(shape)nbytes\n" and the bytes
    reference = hashlib.sha256(b"ember-fingerprint-v1\n" + b"float32(2, 3)24\n" + x.tobytes()).hexdigest()
    assert fingerprint(x) == reference == fingerprint(torch.from_numpy(x))


def test_sensitive_to_one_value_dtype_and_shape() -> None:
    x = torch.arange(100, dtype=torch.float32)
    changed = x.clone()
    changed[57] += 1e-3
    assert fingerprint(x) != fingerprint(changed)
    assert fingerprint(x) != fingerprint(x.double())
    assert fingerprint(x) != fingerprint(x.reshape(10, 10))


def test_layout_and_byte_order_do_not_matter() -> None:
    x = np.arange(12, dtype=np.int32).reshape(3, 4)
    assert fingerprint(x) == fingerprint(np.asfortranarray(x)) == fingerprint(x.astype(">i4"))
    t = torch.arange(12.0).reshape(4, 3)
    assert fingerprint(t.t()) == fingerprint(t.t().contiguous())
    assert fingerprint(torch.ones(3, dtype=torch.bfloat16)) != fingerprint(torch.ones(3, dtype=torch.float16))


def test_indices_and_datasets() -> None:
    assert fingerprint_indices([3, 1]) == fingerprint_indices(torch.tensor([3, 1], dtype=torch.int32))
    assert fingerprint_indices([3, 1]) != fingerprint_indices([1, 3])
    data = ArrayData(torch.rand(5, 2), torch.arange(5))
    assert fingerprint_dataset(data) == fingerprint(data.x, data.y)

    class Items(torch.utils.data.Dataset):
        def __init__(self, value: float) -> None:
            self.value = value

        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return torch.full((2,), self.value * i), i

    assert fingerprint_dataset(Items(1.0)) == fingerprint_dataset(Items(1.0))
    assert fingerprint_dataset(Items(1.0)) != fingerprint_dataset(Items(2.0))
