"""Inter-rater agreement: Cohen's kappa, Fleiss' kappa and Krippendorff's alpha.

All three compare the agreement raters reached with the agreement chance alone would give
(1: perfect, 0: chance, below 0: systematic disagreement):

- :func:`cohen_kappa`: two raters who rated the same items (optionally weighted for ordinal
  scales); matches scikit-learn's ``cohen_kappa_score``.
- :func:`fleiss_kappa`: any number of raters, the same number of ratings per item.
- :func:`krippendorff_alpha`: any number of raters, missing ratings allowed, and nominal,
  ordinal, interval or ratio scales.

Ratings may be any hashable values (``"A"``, ``"tie"``, ``4``); missing ones are ``None`` or NaN.

Example:
    >>> cohen_kappa(["a", "a", "b", "b"], ["a", "a", "b", "a"])
    0.5
    >>> round(krippendorff_alpha([[1, 2, 3, 3], [1, 2, 3, 4]], level="interval"), 3)
    0.889
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

Level = Literal["nominal", "ordinal", "interval", "ratio"]


def cohen_kappa(
    rater_a: Sequence[Any],
    rater_b: Sequence[Any],
    *,
    weights: Literal["linear", "quadratic"] | None = None,
    labels: Sequence[Any] | None = None,
) -> float:
    """Cohen's kappa of two raters' labels for the same items.

    Args:
        rater_a / rater_b: one label per item, in the same item order.
        weights: None (every disagreement counts fully), ``linear`` or ``quadratic`` (disagreements
            weighted by their distance along ``labels``' order, for ordinal scales).
        labels: the categories in order (default: the sorted labels seen).

    Returns:
        kappa; NaN when chance agreement is already perfect (a single category used).
    """
    a, b = list(rater_a), list(rater_b)
    if len(a) != len(b):
        raise ValueError(f"both raters must rate the same items; got {len(a)} and {len(b)} labels")
    if not a:
        raise ValueError("no items to compare")
    categories = list(labels) if labels is not None else sorted(set(a) | set(b), key=_order_key)
    index = {c: i for i, c in enumerate(categories)}
    missing = (set(a) | set(b)) - set(index)
    if missing:
        raise ValueError(f"labels {sorted(missing, key=_order_key)} are not among labels={categories}")
    k = len(categories)
    confusion = np.zeros((k, k))
    np.add.at(confusion, ([index[x] for x in a], [index[x] for x in b]), 1)
    expected = np.outer(confusion.sum(1), confusion.sum(0)) / confusion.sum()
    grid = np.arange(k)
    if weights is None:
        cost = 1.0 - np.eye(k)
    elif weights == "linear":
        cost = np.abs(grid[:, None] - grid[None, :]).astype(float)
    elif weights == "quadratic":
        cost = (grid[:, None] - grid[None, :]).astype(float) ** 2
    else:
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")
    chance = float((cost * expected).sum())
    return 1.0 - float((cost * confusion).sum()) / chance if chance > 0 else math.nan


def fleiss_kappa(table: Any) -> float:
    """Fleiss' kappa from an ``(items, categories)`` table of how many raters chose each category.

    Every item must have the same number of ratings (at least 2). :func:`category_counts` builds
    the table from a raters × items matrix.

    Example:
        >>> round(fleiss_kappa([[2, 0], [0, 2], [1, 1]]), 4)
        0.3333
    """
    counts = np.asarray(table, dtype=float)
    if counts.ndim != 2 or len(counts) == 0:
        raise ValueError(f"expected an (items, categories) table of counts, got shape {counts.shape}")
    per_item = counts.sum(1)
    n = per_item[0]
    if not np.allclose(per_item, n) or n < 2:
        raise ValueError(
            "Fleiss' kappa needs the same number (>= 2) of ratings for every item; got "
            f"{sorted(set(per_item.tolist()))}. Use krippendorff_alpha for uneven or missing ratings."
        )
    shares = counts.sum(0) / counts.sum()
    observed = float(((counts * (counts - 1)).sum(1) / (n * (n - 1))).mean())
    chance = float((shares**2).sum())
    return (observed - chance) / (1 - chance) if chance < 1 else math.nan


def category_counts(ratings: Any, categories: Sequence[Any] | None = None) -> tuple[np.ndarray, list[Any]]:
    """``(items, categories)`` counts from a raters × items matrix (None/NaN: not rated).

    Returns:
        The table and the category of each column.
    """
    matrix = _matrix(ratings)
    cats = list(categories) if categories is not None else _categories(matrix)
    index = {c: i for i, c in enumerate(cats)}
    table = np.zeros((matrix.shape[1], len(cats)))
    for rater in matrix:
        for item, value in enumerate(rater):
            if not _missing(value):
                table[item, index[value]] += 1
    return table, cats


def krippendorff_alpha(ratings: Any, *, level: Level = "nominal") -> float:
    """Krippendorff's alpha of a raters × items matrix; None or NaN marks a missing rating.

    Items with fewer than two ratings carry no information about agreement and are skipped.

    Args:
        ratings: ``(raters, items)``: nested lists or an array (object arrays for strings).
        level: ``nominal`` (categories), ``ordinal`` (ranks), ``interval`` or ``ratio`` (numbers).

    Returns:
        alpha (Krippendorff 2011, "Computing Krippendorff's alpha-reliability"); NaN when there is
        no variation at all.

    Example:
        >>> round(krippendorff_alpha([[0, 1, 0, 0, 0, 0, 0, 0, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]]), 3)
        0.095
    """
    matrix = _matrix(ratings)
    values = _categories(matrix)
    if level != "nominal" and not all(isinstance(v, int | float | np.integer | np.floating) for v in values):
        raise ValueError(f"level '{level}' needs numeric ratings; got {values[:5]}")
    table, _ = category_counts(matrix, values)  # (items, values)
    table = table[table.sum(1) >= 2]  # only items rated at least twice are pairable
    if len(table) == 0:
        raise ValueError("no item has two or more ratings; agreement cannot be computed")
    m = table.sum(1, keepdims=True)
    # coincidence matrix: o[c, k] = sum over items of pairs (c, k) between different raters / (m - 1)
    coincidence = ((table / (m - 1))[:, :, None] * table[:, None, :]).sum(0) - np.diag(
        (table / (m - 1)).sum(0)
    )
    totals = coincidence.sum(1)  # n_c
    n = totals.sum()
    delta = _distance(np.asarray(values, dtype=object), totals, level)
    observed = float((coincidence * delta).sum())
    expected = float((np.outer(totals, totals) * delta).sum()) / (n - 1)
    return float(1.0 - observed / expected) if expected > 0 else math.nan


def _distance(values: np.ndarray, totals: np.ndarray, level: Level) -> np.ndarray:
    """The squared difference function δ²(c, k) of each pair of values."""
    k = len(values)
    if level == "nominal":
        return 1.0 - np.eye(k)
    v = values.astype(float)
    if level == "interval":
        return (v[:, None] - v[None, :]) ** 2
    if level == "ratio":
        total = v[:, None] + v[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            out = ((v[:, None] - v[None, :]) / total) ** 2
        return np.where(total == 0, 0.0, out)
    if level == "ordinal":  # values are sorted: the count of ratings between c and k, halving the ends
        cumulative = np.concatenate([[0.0], np.cumsum(totals)])
        lo, hi = np.minimum.outer(np.arange(k), np.arange(k)), np.maximum.outer(np.arange(k), np.arange(k))
        between = cumulative[hi + 1] - cumulative[lo] - (totals[lo] + totals[hi]) / 2
        return between**2
    raise ValueError(f"level must be nominal, ordinal, interval or ratio, got {level!r}")


def pairwise_cohen(ratings: Any) -> dict[str, Any]:
    """Cohen's kappa for every pair of raters over the items both rated, and their mean.

    Returns:
        ``{"mean": float | nan, "pairs": [[rater_i, rater_j, kappa, items]]}``.
    """
    matrix = _matrix(ratings)
    pairs = []
    for i in range(len(matrix)):
        for j in range(i + 1, len(matrix)):
            both = [
                t for t in range(matrix.shape[1]) if not _missing(matrix[i, t]) and not _missing(matrix[j, t])
            ]
            if len(both) >= 2:
                kappa = cohen_kappa([matrix[i, t] for t in both], [matrix[j, t] for t in both])
                pairs.append([i, j, kappa, len(both)])
    finite = [p[2] for p in pairs if not math.isnan(p[2])]
    return {"mean": float(np.mean(finite)) if finite else math.nan, "pairs": pairs}


def rating_agreement(
    value: dict[tuple[str, str], Any], raters: list[str], rows: list[str], *, level: Level = "nominal"
) -> dict[str, Any]:
    """Cohen's (mean over rater pairs), Fleiss' and Krippendorff's agreement of ``(rater, row) -> rating``.

    Fleiss' kappa uses the rows every rater rated; Krippendorff's alpha every row rated twice or
    more, at ``level``. Each entry is ``{"value": float | None, "note": str, ...}``; None where
    the statistic is undefined (one rater, no shared rows, no variation).
    """
    matrix = np.full((len(raters), len(rows)), None, dtype=object)
    r_index, c_index = {r: i for i, r in enumerate(raters)}, {c: i for i, c in enumerate(rows)}
    for (rater, row), v in value.items():
        matrix[r_index[rater], c_index[row]] = v
    out: dict[str, Any] = {}
    if len(raters) < 2:
        note = "one rater: agreement needs two or more"
        return {
            name: {"value": None, "note": note}
            for name in ("cohen_kappa", "fleiss_kappa", "krippendorff_alpha")
        }
    cohen = pairwise_cohen(matrix)
    shared = [p[3] for p in cohen["pairs"]]
    out["cohen_kappa"] = {
        "value": None if math.isnan(cohen["mean"]) else cohen["mean"],
        "pairs": [[raters[i], raters[j], None if math.isnan(k) else k, n] for i, j, k, n in cohen["pairs"]],
        "note": f"mean over {len(shared)} rater pair(s)" if shared else "no two raters share two rows",
    }
    complete = [c for c in range(len(rows)) if all(v is not None for v in matrix[:, c])]
    if len(complete) >= 2:
        table, _ = category_counts(matrix[:, complete])
        kappa = fleiss_kappa(table)
        out["fleiss_kappa"] = {
            "value": None if math.isnan(kappa) else kappa,
            "items": len(complete),
            "note": f"{len(complete)} rows rated by all {len(raters)} raters",
        }
    else:
        out["fleiss_kappa"] = {"value": None, "items": 0, "note": "fewer than 2 rows rated by every rater"}
    try:
        alpha = krippendorff_alpha(matrix, level=level)
        out["krippendorff_alpha"] = {
            "value": None if math.isnan(alpha) else alpha,
            "level": level,
            "note": f"{level}, all rows rated twice or more",
        }
    except ValueError as e:
        out["krippendorff_alpha"] = {"value": None, "level": level, "note": str(e)}
    return out


def _matrix(ratings: Any) -> np.ndarray:
    matrix = np.array(ratings, dtype=object)
    if matrix.ndim != 2:
        raise ValueError(f"ratings must be a raters x items matrix, got shape {matrix.shape}")
    return matrix


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def _categories(matrix: np.ndarray) -> list[Any]:
    seen = {_plain(v) for v in matrix.ravel() if not _missing(v)}
    return sorted(seen, key=_order_key)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _order_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


__all__ = [
    "category_counts",
    "cohen_kappa",
    "fleiss_kappa",
    "krippendorff_alpha",
    "pairwise_cohen",
    "rating_agreement",
]
