"""Leakage: the same (or almost the same) example on both sides of a split, and features that give away the label.

**Exact duplicates** are found by hashing each example's bytes. **Near duplicates** are pairs whose
inputs differ by a small perturbation: after aligning them by up to ``max_shift`` pixels, no value
differs by more than ``tolerance`` of the data's range, but for a few (``outliers``, 2% of the
values: one pixel of 64). That criterion is strict on purpose: added noise spreads small
differences over every pixel, while two different handwritten digits, however alike, differ
strongly in several strokes; so it finds noisy and shifted copies and invents no pairs between
distinct examples. Candidates come from one of:

- ``pixel``: every pair, per shift, bounded first by the L2 distance (with values in [0, 1], all
  but ``k`` differences ``<= t`` implies ``L2² <= k + (D - k) t²``, so the bound loses nothing) and
  then checked exactly. Complete.
- ``phash``: pairs whose perceptual hashes (DCT of a 32x32 thumbnail, 63 bits) differ in at most
  ``hash_radius`` bits, then checked exactly. Approximate, for large image sets.
- ``embedding``: pairs whose embeddings (e.g. a model's pooled features) have cosine similarity
  at least ``similarity``, then checked exactly when the inputs are arrays.

:func:`feature_leakage` finds a single feature that predicts the label almost perfectly.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((50, 1, 8, 8)).astype(np.float32)
    >>> b = np.concatenate([a[:3], np.roll(a[3:4], 1, axis=-1), rng.random((5, 1, 8, 8))])
    >>> b[3, ..., 0] = 0.0  # a one-pixel shift with an empty column, as cropping gives
    >>> found = find_duplicates(a, b)
    >>> found.exact.tolist(), found.near.tolist()
    ([[0, 0], [1, 1], [2, 2]], [[3, 3]])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

NearMethod = Literal["auto", "pixel", "phash", "embedding"]
IMAGE_TOLERANCE = 0.15  # of the value range: ~2.4 grey levels of 16, ~38 of 256
TABLE_TOLERANCE = 0.02
PIXEL_WORK_LIMIT = 2e10  # multiply-adds above which "auto" uses perceptual hashes for images


@dataclass
class Duplicates:
    """Pairs ``(i, j)``: example ``i`` of ``a`` and example ``j`` of ``b`` (of ``a`` when ``b`` is None).

    Attributes:
        exact: ``(K, 2)`` pairs with identical bytes.
        near: ``(M, 2)`` pairs within ``tolerance`` after alignment (exact pairs excluded).
        distance: ``(M,)`` of each near pair, the largest absolute difference (``outliers`` largest
            set aside) as a fraction of the value range.
        shift: ``(M, 2)`` the ``(dy, dx)`` applied to ``a``'s example that aligns it with ``b``'s.
        method / tolerance / max_shift / outliers: how near pairs were found (``outliers``: how
            many values per example may differ by more than ``tolerance``).
        truncated: more than ``max_pairs`` pairs existed; the lists hold the first ones.
    """

    exact: np.ndarray
    near: np.ndarray
    distance: np.ndarray
    shift: np.ndarray
    method: str
    tolerance: float
    max_shift: int
    outliers: int = 0
    truncated: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self, limit: int = 20) -> dict[str, Any]:
        """Counts and the first ``limit`` pairs of each kind, JSON-ready."""
        return {
            "exact_pairs": len(self.exact),
            "near_pairs": len(self.near),
            "exact": self.exact[:limit].tolist(),
            "near": [
                [int(i), int(j), round(float(d), 4)]
                for (i, j), d in zip(self.near[:limit], self.distance[:limit])
            ],
            "method": self.method,
            "tolerance": self.tolerance,
            "max_shift": self.max_shift,
            "outliers": self.outliers,
            "truncated": self.truncated,
            "notes": self.notes,
        }


def find_duplicates(
    a: Any,
    b: Any = None,
    *,
    near: bool = True,
    method: NearMethod = "auto",
    tolerance: float | None = None,
    max_shift: int = 1,
    outliers: float = 0.02,
    embeddings: tuple[Any, Any] | None = None,
    similarity: float = 0.99,
    hash_radius: int = 12,
    max_pairs: int = 100_000,
) -> Duplicates:
    """Exact and near duplicates between ``a`` and ``b`` (or within ``a``).

    Args:
        a: ``(N, ...)`` array or tensor: images ``(N, C, H, W)`` / ``(N, H, W)`` or tables ``(N, F)``.
        b: ``(M, ...)`` with the same example shape, or None to search ``a`` against itself.
        near: also look for near duplicates.
        method: ``pixel``, ``phash`` (images), ``embedding`` (needs ``embeddings``), or ``auto``:
            ``embedding`` when embeddings are given, else ``pixel`` unless that costs more than
            2e10 multiply-adds on images, then ``phash``.
        tolerance: the largest absolute difference, as a fraction of the pooled value range, that
            still counts as "the same" (default 0.15 for images, 0.02 for tables).
        max_shift: images are aligned by up to this many pixels in each direction (0: no shifts).
        outliers: the fraction of values (rounded down: 1 of 64 pixels, 15 of 784) allowed to
            differ by more than ``tolerance``: a stray noisy pixel does not hide a copy.
        embeddings: ``(emb_a, emb_b)`` of shapes ``(N, E)`` and ``(M, E)`` for ``embedding``.
        similarity: cosine similarity from which embedding pairs are candidates.
        hash_radius: Hamming distance (of 63 bits) up to which ``phash`` pairs are candidates.
        max_pairs: at most this many pairs of each kind are kept (``truncated`` says so).

    Returns:
        :class:`Duplicates`.
    """
    xa = _as_array(a, "a")
    xb = xa if b is None else _as_array(b, "b")
    if xa.shape[1:] != xb.shape[1:]:
        raise ValueError(f"a and b must hold examples of one shape; got {xa.shape[1:]} and {xb.shape[1:]}")
    within = b is None
    image = xa.ndim >= 3
    tol = tolerance if tolerance is not None else (IMAGE_TOLERANCE if image else TABLE_TOLERANCE)
    shifts = max_shift if image else 0
    spare = int(outliers * xa[0].size) if xa.size else 0
    exact = exact_duplicates(xa, None if within else xb, max_pairs=max_pairs)
    empty = Duplicates(
        exact, np.empty((0, 2), np.int64), np.empty(0), np.empty((0, 2), np.int64), "none", tol, shifts, spare
    )
    empty.truncated = len(exact) >= max_pairs
    if not near or len(xa) == 0 or len(xb) == 0:
        return empty
    if method == "auto":
        work = len(xa) * len(xb) * xa[0].size * (2 * shifts + 1) ** 2
        method = (
            "embedding"
            if embeddings is not None
            else "phash"
            if image and work > PIXEL_WORK_LIMIT
            else "pixel"
        )
    ua, ub = _unit_scale(xa, xb)
    if method == "pixel":
        pairs, dist, where = _pixel_pairs(ua, ub, tol, spare, shifts, within, max_pairs)
    elif method == "phash":
        if not image:
            raise ValueError("method 'phash' needs images (N, C, H, W) or (N, H, W); use 'pixel' for tables")
        pairs = _hash_candidates(ua, ub, shifts, hash_radius, within)
        pairs, dist, where = _verify(ua, ub, pairs, tol, spare, shifts)
    elif method == "embedding":
        if embeddings is None:
            raise ValueError("method 'embedding' needs embeddings=(emb_a, emb_b)")
        pairs = _embedding_candidates(embeddings, similarity, within)
        pairs, dist, where = _verify(ua, ub, pairs, tol, spare, shifts)
    else:
        raise ValueError(
            f"unknown near-duplicate method '{method}'; expected auto, pixel, phash or embedding"
        )
    if len(exact):  # an exact pair is reported once, as exact
        exact_keys = set(map(tuple, exact.tolist()))
        keep = np.array([tuple(p) not in exact_keys for p in pairs.tolist()], dtype=bool)
        pairs, dist, where = pairs[keep], dist[keep], where[keep]
    order = np.lexsort((pairs[:, 1], pairs[:, 0])) if len(pairs) else np.empty(0, np.int64)
    truncated = empty.truncated or len(pairs) > max_pairs
    order = order[:max_pairs]
    return Duplicates(exact, pairs[order], dist[order], where[order], method, tol, shifts, spare, truncated)


# --------------------------------------------------------------------------- exact


def exact_duplicates(a: np.ndarray, b: np.ndarray | None = None, *, max_pairs: int = 100_000) -> np.ndarray:
    """``(K, 2)`` pairs of byte-identical examples (``i < j`` when ``b`` is None), sorted."""
    rows_a = _row_keys(a)
    rows_b = rows_a if b is None else _row_keys(b.astype(a.dtype, copy=False))
    groups: dict[bytes, list[int]] = {}
    for i, key in enumerate(rows_a):
        groups.setdefault(key, []).append(i)
    pairs: list[tuple[int, int]] = []
    for j, key in enumerate(rows_b):
        for i in groups.get(key, ()):
            if (b is not None or i < j) and len(pairs) < max_pairs:
                pairs.append((i, j))
    out = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    return out


def _row_keys(x: np.ndarray) -> list[bytes]:
    flat = np.ascontiguousarray(x.reshape(len(x), -1))
    flat = flat + 0.0 if flat.dtype.kind == "f" else flat  # -0.0 and 0.0 are one value
    return [row.tobytes() for row in flat]


# --------------------------------------------------------------------------- near: candidates


def _pixel_pairs(
    a: torch.Tensor, b: torch.Tensor, tol: float, outliers: int, shifts: int, within: bool, max_pairs: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair within ``tol`` under some shift: an L2 bound per chunk, then the exact distance."""
    flat_b = b.reshape(len(b), -1)  # (M, D)
    sq_b = (flat_b**2).sum(1)
    # values lie in [0, 1]: all but `outliers` differences <= tol bounds the squared L2 distance
    bound = (outliers + tol * tol * (flat_b.shape[1] - outliers)) * (1 + 1e-6) + 1e-9
    rows = max(1, int(4e6 // max(1, len(b))))
    found: dict[tuple[int, int], tuple[float, tuple[int, int]]] = {}
    for dy, dx in _offsets(shifts):
        moved = _shift(a, dy, dx).reshape(len(a), -1)  # (N, D)
        for start in range(0, len(a), rows):
            block = moved[start : start + rows]
            d2 = (block**2).sum(1)[:, None] + sq_b[None, :] - 2 * block @ flat_b.T  # (n, M)
            i, j = torch.nonzero(d2 <= bound, as_tuple=True)
            if len(i) == 0:
                continue
            dist = _distance(block[i] - flat_b[j], outliers)
            for ii, jj, d in zip((i + start).tolist(), j.tolist(), dist.tolist()):
                if d <= tol:
                    _keep(found, ii, jj, d, (dy, dx), within)
            if len(found) > max_pairs:
                break
    return _unpack(found)


def _hash_candidates(a: torch.Tensor, b: torch.Tensor, shifts: int, radius: int, within: bool) -> np.ndarray:
    """Pairs whose perceptual hashes are within ``radius`` bits, under any hashed shift."""
    # a 1-pixel shift moves a small image's hash by ~30 bits, a large one's by few: hash shifts only when small
    hashed = shifts if min(a.shape[-2:]) < 16 else 0
    code_b = perceptual_hash(b).float() * 2 - 1  # (M, 63) of ±1
    pairs: set[tuple[int, int]] = set()
    for dy, dx in _offsets(hashed):
        code_a = perceptual_hash(_shift(a, dy, dx)).float() * 2 - 1
        for start in range(0, len(a), 2048):
            agree = code_a[start : start + 2048] @ code_b.T  # bits equal - bits different
            i, j = torch.nonzero((code_b.shape[1] - agree) / 2 <= radius, as_tuple=True)
            pairs.update(
                (ii, jj) for ii, jj in zip((i + start).tolist(), j.tolist()) if not within or ii < jj
            )
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def _embedding_candidates(embeddings: tuple[Any, Any], similarity: float, within: bool) -> np.ndarray:
    ea = torch.as_tensor(_as_array(embeddings[0], "embeddings[0]")).reshape(len(embeddings[0]), -1)
    eb = torch.as_tensor(_as_array(embeddings[1], "embeddings[1]")).reshape(len(embeddings[1]), -1)
    ea, eb = F.normalize(ea.double(), dim=1), F.normalize(eb.double(), dim=1)
    pairs = []
    for start in range(0, len(ea), 2048):
        i, j = torch.nonzero(ea[start : start + 2048] @ eb.T >= similarity, as_tuple=True)
        pairs += [(ii, jj) for ii, jj in zip((i + start).tolist(), j.tolist()) if not within or ii < jj]
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def _verify(
    a: torch.Tensor, b: torch.Tensor, pairs: np.ndarray, tol: float, outliers: int, shifts: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidate pairs that are within ``tol`` under some shift, with distance and shift."""
    offsets = _offsets(shifts)
    kept: list[np.ndarray] = []
    dists: list[np.ndarray] = []
    wheres: list[np.ndarray] = []
    for start in range(0, len(pairs), 50_000):  # bounded memory: a chunk of pairs at a time
        chunk = torch.as_tensor(pairs[start : start + 50_000])
        i, j = chunk[:, 0], chunk[:, 1]
        target = b[j].reshape(len(j), -1)
        dist = torch.stack(
            [_distance(_shift(a[i], dy, dx).reshape(len(i), -1) - target, outliers) for dy, dx in offsets]
        )  # (S, P)
        best, which = dist.min(0)
        ok = best <= tol
        kept.append(chunk[ok].numpy())
        dists.append(best[ok].double().numpy())
        wheres.append(np.array(offsets, dtype=np.int64).reshape(-1, 2)[which[ok].numpy()])
    if not kept:
        return np.empty((0, 2), np.int64), np.empty(0), np.empty((0, 2), np.int64)
    return np.concatenate(kept), np.concatenate(dists), np.concatenate(wheres)


def _distance(difference: torch.Tensor, outliers: int) -> torch.Tensor:
    """``(P, D) -> (P,)``: the largest absolute difference once the ``outliers`` largest are set aside."""
    size = difference.abs()
    return size.amax(1) if outliers == 0 else size.topk(outliers + 1, dim=1).values[:, -1]


def _keep(
    found: dict[tuple[int, int], tuple[float, tuple[int, int]]],
    i: int,
    j: int,
    d: float,
    where: tuple[int, int],
    within: bool,
) -> None:
    if within:
        if i == j:
            return
        if i > j:  # the same pair seen from the other side: store it once, as (small, large)
            i, j, where = j, i, (-where[0], -where[1])
    if (i, j) not in found or d < found[(i, j)][0]:
        found[(i, j)] = (d, where)


def _unpack(
    found: dict[tuple[int, int], tuple[float, tuple[int, int]]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keys = list(found)
    pairs = np.array(keys, dtype=np.int64).reshape(-1, 2)
    dist = np.array([found[k][0] for k in keys], dtype=np.float64)
    where = np.array([found[k][1] for k in keys], dtype=np.int64).reshape(-1, 2)
    return pairs, dist, where


# --------------------------------------------------------------------------- perceptual hash


def perceptual_hash(images: Any) -> torch.Tensor:
    """63-bit perceptual hashes: ``(N, C, H, W)`` or ``(N, H, W)`` → ``(N, 63)`` bool.

    The grey image is resized to 32x32, transformed by a 2-D DCT, and the 8x8 lowest frequencies
    but the constant one are compared with their median (the classic pHash).
    """
    x = torch.as_tensor(_as_array(images, "images")).float()
    x = x[:, None] if x.ndim == 3 else x
    grey = x.mean(1, keepdim=True)  # (N, 1, H, W)
    small = F.interpolate(grey, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)[:, 0]
    basis = _dct_matrix(32)
    coeffs = basis @ small @ basis.T  # (N, 32, 32)
    low = coeffs[:, :8, :8].reshape(len(x), 64)[:, 1:]  # (N, 63)
    return low > low.median(dim=1, keepdim=True).values


def _dct_matrix(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    basis[0] /= math.sqrt(2)
    return basis.float()


# --------------------------------------------------------------------------- feature leakage


def feature_leakage(
    x: Any,
    y: Any,
    *,
    threshold: float = 0.98,
    max_rows: int = 20_000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Features that predict the label almost perfectly on their own.

    Each feature alone predicts the labels of one half of the data from the other half: an
    example takes the majority label (regression: the mean) of the training examples with the
    nearest value of that feature; then the halves swap. A feature is reported when that held-out
    accuracy (regression: R²) is at least ``threshold`` and clearly above always guessing the
    majority class. An ID column, a label copied into the inputs, or a value computed from the
    label shows up here; an ordinary pixel does not.

    Args:
        x: ``(N, ...)`` inputs; each example is flattened to features.
        y: ``(N,)`` integer class labels, or floats for regression.
        threshold: held-out accuracy (or R²) from which one feature counts as leaking the label.
        max_rows: a seeded subsample of at most this many rows is used.
        seed: seeds the subsample and the halves.

    Returns:
        ``[{"feature", "score", "metric", "baseline"}]``, best first; empty when none leaks.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 3, 200)
        >>> x = np.stack([rng.normal(size=200), y * 10 + rng.random(200)], axis=1)
        >>> [f["feature"] for f in feature_leakage(x, y)]
        [1]
    """
    features = _as_array(x, "x").reshape(len(x), -1).astype(np.float64)
    target = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
    if len(target) != len(features) or target.ndim != 1:
        raise ValueError(f"y must be one label per example; got {target.shape} for {len(features)} examples")
    rng = np.random.default_rng(seed)
    if len(features) > max_rows:
        keep = rng.choice(len(features), max_rows, replace=False)
        features, target = features[keep], target[keep]
    if len(features) < 20:
        return []
    classify = target.dtype.kind in "iub"
    values = np.unique(target, return_inverse=True)[1] if classify else target.astype(np.float64)
    half = rng.permutation(len(features)) < len(features) // 2
    scores = np.zeros(features.shape[1])
    for f in range(features.shape[1]):
        for fit in (half, ~half):
            scores[f] += (
                _nearest_value_score(features[fit, f], values[fit], features[~fit, f], values[~fit]) / 2
            )
    if classify:
        baseline = float(np.bincount(values).max() / len(values))
        leaking = (scores >= threshold) & (scores >= baseline + (1 - baseline) / 2)
    else:
        baseline = 0.0
        leaking = scores >= threshold
    order = np.flatnonzero(leaking)[np.argsort(-scores[leaking], kind="stable")]
    metric = "accuracy" if classify else "r2"
    return [
        {
            "feature": int(f),
            "score": round(float(scores[f]), 4),
            "metric": metric,
            "baseline": round(baseline, 4),
        }
        for f in order
    ]


def _nearest_value_score(
    x_fit: np.ndarray, y_fit: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray
) -> float:
    """Held-out accuracy (int labels) or R² (float targets) of predicting y from the nearest x value."""
    levels, level_of = np.unique(x_fit, return_inverse=True)  # sorted distinct values of the feature
    if y_fit.dtype.kind in "iub":
        k = int(max(y_fit.max(), y_eval.max())) + 1
        counts = np.bincount(level_of * k + y_fit, minlength=len(levels) * k).reshape(len(levels), k)
        guess = counts.argmax(1)  # the majority label at each value
    else:
        guess = np.bincount(level_of, weights=y_fit) / np.bincount(level_of)  # the mean at each value
    right = np.clip(np.searchsorted(levels, x_eval), 0, len(levels) - 1)
    left = np.clip(right - 1, 0, len(levels) - 1)
    nearest = np.where(np.abs(levels[left] - x_eval) < np.abs(levels[right] - x_eval), left, right)
    predicted = guess[nearest]
    if y_fit.dtype.kind in "iub":
        return float((predicted == y_eval).mean())
    spread = float(((y_eval - y_eval.mean()) ** 2).sum())
    return 1.0 - float(((y_eval - predicted) ** 2).sum()) / spread if spread > 0 else 0.0


# --------------------------------------------------------------------------- helpers


def _as_array(data: Any, name: str) -> np.ndarray:
    array = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if array.ndim < 2 and name in ("a", "b", "images"):
        raise ValueError(f"{name} must be (N, ...) examples, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
    return array


def _unit_scale(a: np.ndarray, b: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sets scaled by the pooled range to [0, 1] (tables: per feature), as float32 tensors."""
    ta, tb = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    dims = (0,) if a.ndim == 2 else tuple(range(a.ndim))  # tables: per column; images: global
    low = torch.minimum(ta.amin(dim=dims), tb.amin(dim=dims))
    span = torch.maximum(ta.amax(dim=dims), tb.amax(dim=dims)) - low
    span = torch.where(span > 0, span, torch.ones_like(span))
    return (ta - low) / span, (tb - low) / span


def _offsets(shifts: int) -> list[tuple[int, int]]:
    steps = range(-shifts, shifts + 1)
    return sorted(((dy, dx) for dy in steps for dx in steps), key=lambda o: (abs(o[0]) + abs(o[1]), o))


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Images moved ``dy`` rows down and ``dx`` columns right; the uncovered border is 0 (the minimum)."""
    if dy == 0 and dx == 0 or x.ndim < 3:
        return x
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


__all__ = ["Duplicates", "exact_duplicates", "feature_leakage", "find_duplicates", "perceptual_hash"]
