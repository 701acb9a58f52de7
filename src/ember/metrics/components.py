"""Connected components of a canvas and a classifier of their crops: the classical detection and
segmentation baseline.

An image's foreground (pixels above a threshold) falls into 8-connected components
(``scipy.ndimage.label``); each component's bounding box is cropped, padded to a square, resized to
``size`` x ``size`` and, with the box's height and width, classified by a scikit-learn logistic
regression trained on crops of the training split. Touching objects merge into one component and a
broken stroke splits one into two: that is the baseline's honest weakness, and the margin a learned
model should show.

Example:
    >>> import numpy as np
    >>> image = np.zeros((8, 8)); image[1:3, 1:4] = 1; image[5:7, 5:7] = 0.5
    >>> [box for _, box in label_components(image, 0.0)[1]]
    [(1, 1, 4, 3), (5, 5, 7, 7)]
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

CROP_SIZE = 16


def label_components(
    image: np.ndarray, threshold: float, *, min_pixels: int = 1
) -> tuple[np.ndarray, list[tuple[int, tuple[int, int, int, int]]]]:
    """8-connected components of ``image > threshold`` with at least ``min_pixels`` pixels.

    Args:
        image: ``(H, W)`` intensities.

    Returns:
        ``(labels, components)``: the ``(H, W)`` component id of every pixel (0: background) and, for
        each kept component, its id and tight box ``(x0, y0, x1, y1)`` (pixel ``j`` spans ``[j, j+1)``).
    """
    from scipy import ndimage

    labels, count = ndimage.label(image > threshold, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    found = []
    for i, where in enumerate(ndimage.find_objects(labels), start=1):
        if where is not None and sizes[i] >= min_pixels:
            rows, cols = where
            found.append((i, (int(cols.start), int(rows.start), int(cols.stop), int(rows.stop))))
    return labels, found


def crop_features(crops: list[np.ndarray], canvas_size: int, *, size: int = CROP_SIZE) -> np.ndarray:
    """``(N, size * size + 2)`` float64: each crop centred in a zero square, resized (bilinear,
    antialiased) to ``size`` x ``size``, then its height and width over ``canvas_size``."""
    rows = []
    for crop in crops:
        h, w = crop.shape
        side = max(h, w)
        square = np.zeros((side, side), np.float32)
        top, left = (side - h) // 2, (side - w) // 2
        square[top : top + h, left : left + w] = crop
        small = F.interpolate(
            torch.from_numpy(square)[None, None], size=(size, size), mode="bilinear", antialias=True
        )[0, 0]
        rows.append(np.r_[small.double().numpy().ravel(), h / canvas_size, w / canvas_size])
    return np.stack(rows) if rows else np.zeros((0, size * size + 2))


class CropClassifier:
    """Standardized multinomial logistic regression (L2, C=1) over ``num_classes`` crop classes.

    Args:
        num_classes: the classes its probabilities cover (a class never seen in training gets 0).

    Example:
        >>> x = np.r_[np.zeros((5, 3)), np.ones((5, 3))] + np.arange(10)[:, None] * 0.01
        >>> clf = CropClassifier(3).fit(x, np.r_[[0] * 5, [2] * 5])
        >>> clf.predict_proba(np.ones((1, 3))).argmax(), clf.predict_proba(x).shape
        (np.int64(2), (10, 3))
    """

    def __init__(self, num_classes: int, *, max_iter: int = 500) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.num_classes = num_classes
        self.pipe: Any = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
        self.note = ""

    def fit(self, features: np.ndarray, labels: np.ndarray) -> CropClassifier:
        from sklearn.exceptions import ConvergenceWarning

        if len(np.unique(labels)) < 2:
            raise ValueError(
                f"the crop classifier needs two classes or more in training, got {np.unique(labels)}"
            )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            self.pipe.fit(features, labels)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            self.note = " (stopped at its iteration limit before converging)"
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """``(N, num_classes)`` probabilities."""
        probs = np.zeros((len(features), self.num_classes))
        if len(features):
            probs[:, self.pipe.classes_] = self.pipe.predict_proba(features)
        return probs


def items(data: Any, *, limit: int | None = None, seed: int = 0) -> list[tuple[np.ndarray, Any]]:
    """``(image, target)`` of a split's items, each image an ``(H, W)`` float array (the mean of its
    channels); with ``limit``, a seeded random subset of at most that many, in their original order."""
    n = len(data)
    index = np.arange(n)
    if limit is not None and n > limit:
        index = np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
    out = []
    for i in index:
        image, target = data[int(i)]
        out.append(
            (torch.as_tensor(image).float().reshape(-1, *image.shape[-2:]).mean(dim=0).numpy(), target)
        )
    return out


__all__ = ["CROP_SIZE", "CropClassifier", "crop_features", "items", "label_components"]
