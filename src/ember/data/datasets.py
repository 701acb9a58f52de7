"""The dataset zoo: `load_dataset` by name, and the built-in data sets.

Built in: ``digits`` (scikit-learn, always available offline), ``fashion-mnist`` and
``mnist-10k`` (fetched once into the cache, see `ember.data.sources`). A user's own files load
through ``image-folder``, ``csv`` and ``npz`` (modules `ember.data.image_folder`,
`ember.data.csv_table`, `ember.data.npz_arrays`). Every image data set gives float32
``(N, C, H, W)`` in ``[0, 1]``, not standardized (see `ember.data.bundle`).

Example:
    >>> from ember.data import load_dataset
    >>> bundle = load_dataset("digits")
    >>> len(bundle.train), bundle.test is None
    (1797, True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ember._registry import Registry
from ember.data.archives import read_idx
from ember.data.bundle import ArrayData, DataBundle, DataError, class_bundle, images_to_unit
from ember.data.sources import fetch

__all__ = ["FASHION_CLASSES", "list_datasets", "load_dataset", "register_dataset", "registry"]

registry: Registry[DataBundle] = Registry("dataset")
register_dataset = registry.register

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DIGIT_CLASSES = [str(digit) for digit in range(10)]


def list_datasets() -> list[str]:
    """Names `load_dataset` accepts, sorted.

    Example:
        >>> "digits" in list_datasets()
        True
    """
    return registry.names()


def load_dataset(name: str, /, **options: Any) -> DataBundle:
    """Load a registered data set by name.

    Args:
        name: one of `list_datasets`, e.g. ``"digits"``, ``"fashion-mnist"``, ``"csv"``.
        **options: the builder's keywords, e.g. ``path=`` and ``target=`` for ``"csv"``; an
            unknown keyword is an error that lists the accepted ones.

    Returns:
        A `DataBundle`: the training pool, the official test split or None, and metadata.

    Example:
        >>> load_dataset("digits").input_shape
        (1, 8, 8)
    """
    return registry.create(name, **options)


@register_dataset("digits")
def digits() -> DataBundle:
    """scikit-learn's 1,797 8x8 handwritten digits (16 grey levels, scaled by 1/16); no test split.

    Example:
        >>> digits().train.x.shape
        torch.Size([1797, 1, 8, 8])
    """
    table = _digits_table()
    images = table[:, :-1].reshape(-1, 8, 8)
    train = ArrayData(images_to_unit(images, 16.0), torch.from_numpy(table[:, -1].astype(np.int64)))
    return class_bundle("digits", train, None, DIGIT_CLASSES)


def _digits_table() -> np.ndarray:
    """sklearn's ``digits.csv.gz`` (64 pixels + label per row), read without importing sklearn,
    whose import alone takes ~2 s; falls back to ``load_digits`` if the file has moved."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as f:
                return np.loadtxt(f, delimiter=",", dtype=np.float64)
    from sklearn.datasets import load_digits

    raw = load_digits()
    return np.concatenate([raw.data, raw.target[:, None]], axis=1)


@register_dataset("fashion-mnist")
def fashion_mnist(*, progress: bool = True) -> DataBundle:
    """Fashion-MNIST: 60,000 training and 10,000 test 28x28 grey images of 10 kinds of clothing.

    Fetched on first use (~31 MB download, ~55 MB cached); offline, run ``ember data get
    fashion-mnist`` where there is a network and copy the cache folder.

    Args:
        progress: show a download progress bar on a terminal.
    """
    folder = fetch("fashion-mnist", progress=progress)

    def part(prefix: str) -> ArrayData:
        images = read_idx(_cached(folder, f"{prefix}-images-idx3-ubyte"), f"{prefix} images")
        labels = read_idx(_cached(folder, f"{prefix}-labels-idx1-ubyte"), f"{prefix} labels")
        return ArrayData(images_to_unit(images, 255.0), torch.from_numpy(labels.astype(np.int64)))

    return class_bundle("fashion-mnist", part("train"), part("t10k"), FASHION_CLASSES)


@register_dataset("mnist-10k")
def mnist_10k(*, progress: bool = True) -> DataBundle:
    """The first 10,000 MNIST training digits, 28x28 grey; no test split (split it yourself).

    Examples are sorted by (label, pixels) so every mirror yields the same bytes; `split_indices`
    shuffles, so the order never reaches training.

    Args:
        progress: show a download progress bar on a terminal.
    """
    folder = fetch("mnist-10k", progress=progress)
    path = folder / "mnist-10k.npz"
    if not path.is_file():
        raise DataError(
            f"the cache folder {folder} is incomplete; delete it and run `ember data get mnist-10k`"
        )
    with np.load(path, allow_pickle=False) as arrays:
        images, labels = arrays["images"], arrays["labels"]
    train = ArrayData(images_to_unit(images, 255.0), torch.from_numpy(labels.astype(np.int64)))
    return class_bundle("mnist-10k", train, None, DIGIT_CLASSES)


def _cached(folder: Path, name: str) -> bytes:
    path = folder / name
    if not path.is_file():
        raise DataError(f"the cache folder {folder} lacks {name}; delete the folder and run `ember data get`")
    return path.read_bytes()
