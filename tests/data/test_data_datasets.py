"""load_dataset: digits, and a user's image folders, CSV tables and npz arrays (with bad input)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ember.data import ArrayData, DataError, list_datasets, load_dataset


def test_registered_names() -> None:
    assert {"digits", "fashion-mnist", "mnist-10k", "image-folder", "csv", "npz"} <= set(list_datasets())


def test_digits() -> None:
    from sklearn.datasets import load_digits

    bundle = load_dataset("digits")
    assert isinstance(bundle.train, ArrayData)
    assert bundle.train.x.shape == (1797, 1, 8, 8) and bundle.train.x.dtype == torch.float32
    assert bundle.train.x.is_contiguous() and bundle.train.x.min() >= 0.0 and bundle.train.x.max() == 1.0
    assert bundle.train.y.dtype == torch.int64 and bundle.num_classes == 10 and bundle.test is None
    assert (bundle.input_shape, bundle.task, bundle.name) == ((1, 8, 8), "classification", "digits")
    reference = load_digits()
    np.testing.assert_allclose(bundle.train.x.numpy()[:, 0], reference.images / 16, rtol=1e-6)


def test_unknown_dataset_and_option() -> None:
    with pytest.raises(KeyError, match="did you mean 'digits'"):
        load_dataset("digit")
    with pytest.raises(TypeError, match="image_size"):
        load_dataset("digits", image_size=8)


def test_array_data_subset() -> None:
    data = ArrayData(torch.arange(12.0).reshape(6, 2), torch.arange(6))
    part = data.subset(np.array([4, 1]))
    assert part.y.tolist() == [4, 1] and part.x.tolist() == [[8.0, 9.0], [2.0, 3.0]]
    with pytest.raises(DataError):
        ArrayData(torch.zeros(3, 2), torch.zeros(2))


def make_image_folder(root: Path, size: int = 6) -> None:
    rng = np.random.default_rng(0)
    for name, count in (("cat", 2), ("dog", 3)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / "dog" / "notes.txt").write_text("not an image, skipped")


def test_image_folder(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "pets")
    bundle = load_dataset("image-folder", path=tmp_path / "pets")
    assert bundle.classes == ["cat", "dog"] and bundle.input_shape == (3, 6, 6)
    assert bundle.train.y.tolist() == [0, 0, 1, 1, 1]
    first = np.asarray(Image.open(tmp_path / "pets" / "cat" / "0.png")).transpose(2, 0, 1) / 255
    np.testing.assert_allclose(bundle.train.x[0].numpy(), first, rtol=1e-6)
    small = load_dataset("image-folder", path=tmp_path / "pets", image_size=4, grayscale=True)
    assert small.train.x.shape == (5, 1, 4, 4)


def test_image_folder_errors_name_the_file(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "pets")
    broken = tmp_path / "pets" / "cat" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is no image")
    with pytest.raises(DataError, match="broken.png"):
        load_dataset("image-folder", path=tmp_path / "pets")
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        load_dataset("image-folder", path=tmp_path / "no-such-folder")


def test_image_folder_mixed_sizes_need_image_size(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "pets")
    Image.fromarray(np.zeros((9, 9, 3), dtype=np.uint8)).save(tmp_path / "pets" / "dog" / "big.png")
    with pytest.raises(DataError, match="image_size"):
        load_dataset("image-folder", path=tmp_path / "pets")
    assert load_dataset("image-folder", path=tmp_path / "pets", image_size=6).train.x.shape == (6, 3, 6, 6)


def test_csv_classification(tmp_path: Path) -> None:
    path = tmp_path / "iris.csv"
    path.write_text("a,species,b\n1.5,setosa,2\n\n3,virginica,4.25\n0,setosa,-1\n")
    bundle = load_dataset("csv", path=path, target="species").fit([0, 1, 2])
    assert bundle.task == "classification" and bundle.classes == ["setosa", "virginica"]
    assert bundle.train.x.tolist() == [[1.5, 2.0], [3.0, 4.25], [0.0, -1.0]]
    assert bundle.train.y.tolist() == [0, 1, 0] and bundle.input_shape == (2,)


def test_npz_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(5, 4, 4, 3), dtype=np.uint8)  # (N, H, W, C)
    y = np.array([0, 2, 1, 2, 0])
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x[:2], y_test=y[:2], classes=np.array(["a", "b", "c"]))
    bundle = load_dataset("npz", path=tmp_path / "d.npz")
    assert bundle.train.x.shape == (5, 3, 4, 4) and bundle.test is not None and len(bundle.test) == 2
    np.testing.assert_allclose(bundle.train.x.numpy(), x.transpose(0, 3, 1, 2) / 255, rtol=1e-6)
    assert bundle.train.y.tolist() == y.tolist() and bundle.classes == ["a", "b", "c"]
    np.savez(tmp_path / "t.npz", x=rng.random((4, 3)), y=rng.random(4))
    table = load_dataset("npz", path=tmp_path / "t.npz")
    assert table.task == "regression" and table.input_shape == (3,) and table.test is None


def test_npz_refuses_pickles_and_missing_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    with pytest.raises(DataError, match="obj.npz"):
        load_dataset("npz", path=tmp_path / "obj.npz")
    np.savez(tmp_path / "k.npz", inputs=np.zeros((2, 2)), y=np.zeros(2, dtype=np.int64))
    with pytest.raises(DataError, match="no array 'x'.*inputs"):
        load_dataset("npz", path=tmp_path / "k.npz")
