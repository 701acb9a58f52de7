"""A user's images, one subfolder per class (``path/cat/1.png``), read into memory with Pillow.

Images become float32 ``(N, C, H, W)`` in ``[0, 1]`` (see `ember.data.bundle`). All of them are
decoded up front, so this suits folders that fit in memory (tens of thousands of small images).

Example:
    >>> from ember.data import load_dataset
    >>> bundle = load_dataset("image-folder", path="pets/", image_size=32)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ember.data.bundle import ArrayData, DataBundle, DataError, class_bundle, existing_path, images_to_unit
from ember.data.datasets import register_dataset

__all__ = ["IMAGE_SUFFIXES", "image_folder"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


@register_dataset("image-folder")
def image_folder(
    path: str | Path,
    *,
    image_size: int | None = None,
    grayscale: bool = False,
    test_path: str | Path | None = None,
) -> DataBundle:
    """Images in one subfolder per class (``path/cat/1.png``); classes are the sorted folder names.

    Args:
        path: the folder of class subfolders (hidden folders and non-image files are skipped).
        image_size: resize every image to ``image_size x image_size``; None requires one size.
        grayscale: read as one channel instead of RGB.
        test_path: an optional second folder, laid out the same, used as the test split.

    Returns:
        A classification `DataBundle` of ``(N, 1 or 3, H, W)`` images in [0, 1].

    Example:
        >>> bundle = image_folder("pets/", image_size=32)  # doctest: +SKIP
    """
    root = existing_path(path, "image folder")
    if not root.is_dir():
        raise DataError(f"{root} is a file; image-folder needs a folder with one subfolder per class")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(
            f"{root} has no class subfolders; expected one folder per class, e.g. {root}/cat/1.png"
        )
    train = _read_images(root, classes, image_size, grayscale)
    test = None
    if test_path is not None:
        test_root = existing_path(test_path, "test image folder")
        extra = sorted(
            d.name
            for d in test_root.iterdir()
            if d.is_dir() and not d.name.startswith(".") and d.name not in classes
        )
        if extra:
            raise DataError(f"{test_root} has classes missing from {root}: {', '.join(extra)}")
        test = _read_images(test_root, classes, image_size, grayscale)
        if test.x.shape[1:] != train.x.shape[1:]:
            raise DataError(
                f"images in {test_root} are {tuple(test.x.shape[1:])} but those in {root} are "
                f"{tuple(train.x.shape[1:])}; pass image_size= to resize both"
            )
    return class_bundle("image-folder", train, test, classes)


def _read_images(root: Path, classes: list[str], size: int | None, grayscale: bool) -> ArrayData:
    from PIL import Image  # pillow loads lazily: `import ember` stays fast

    arrays: list[np.ndarray] = []
    labels: list[int] = []
    first: Path | None = None
    for label, name in enumerate(classes):
        folder = root / name
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        for file in files:
            try:
                with Image.open(file) as opened:
                    # open() reads only the header; convert() decodes, so a corrupt file fails here
                    image = opened.convert("L" if grayscale else "RGB")
                    if size is not None:
                        image = image.resize((size, size), Image.Resampling.BILINEAR)
                    array = np.asarray(image, dtype=np.uint8)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
                raise DataError(f"cannot read image {file}: {error}") from None
            if first is not None and array.shape != arrays[0].shape:
                raise DataError(
                    f"{file} is {array.shape[1]}x{array.shape[0]} but {first} is "
                    f"{arrays[0].shape[1]}x{arrays[0].shape[0]}; pass image_size= to resize all images"
                )
            first = first or file
            arrays.append(array)
            labels.append(label)
    if not arrays:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    stacked = np.stack(arrays)  # (N, H, W) grey or (N, H, W, 3) RGB
    if stacked.ndim == 4:
        stacked = stacked.transpose(0, 3, 1, 2)
    return ArrayData(images_to_unit(stacked, 255.0), torch.tensor(labels, dtype=torch.int64))
