"""Metrics as weighted statistics: what the bootstrap (`ember.evaluate.stats`) resamples.

A **weighted statistic** is a function from a ``(B, n)`` array of multiplicities (how often each of
``n`` units was drawn in each of ``B`` resamples) to ``{name: (B,) values}``: one pass of matrix sums
scores a whole chunk of resamples at once, and the all-ones row gives the point estimate.
:func:`classification_statistics` and :func:`regression_statistics` give the classification and
regression metrics in this form; the other families' live beside them (:mod:`ember.metrics.lm`,
:mod:`~ember.metrics.detection`, :mod:`~ember.metrics.segmentation`,
:mod:`~ember.metrics.translation`).

A task hands its evaluation to the stages as :class:`Evidence` (its statistics over the units it
resamples) and its baselines as :class:`BaselineEvidence` (the same statistics of a baseline's
outputs on the same units); see `ember.tasks.contract`.

Example:
    >>> import numpy as np
    >>> stats = regression_statistics(np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.0, 3.0]))
    >>> {k: round(float(v[0]), 4) for k, v in stats(np.ones((1, 3))).items()}
    {'mse': 0.3333, 'mae': 0.3333, 'r2': 0.5}
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Statistics = Callable[[np.ndarray], dict[str, np.ndarray]]
"""``(B, n)`` unit multiplicities -> ``{metric: (B,) values}``."""


def _auroc_statistic(scores: np.ndarray, positive: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Weighted one-vs-rest AUC of one class: P(score_pos > score_neg) + P(tie) / 2 over weighted pairs."""
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    pos = positive[order].astype(np.float64)
    neg = 1.0 - pos
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # groups of tied scores, ascending
    ties = len(starts) < len(s)

    def auc(weights: np.ndarray) -> np.ndarray:
        w = weights[:, order]
        wp, wn = w * pos, w * neg
        total_p, total_n = wp.sum(axis=1), wn.sum(axis=1)
        if ties:
            wp, wn = np.add.reduceat(wp, starts, axis=1), np.add.reduceat(wn, starts, axis=1)
            pairs = (wp * (np.cumsum(wn, axis=1) - 0.5 * wn)).sum(axis=1)
        else:  # no ties: a positive never shares a position with a negative
            pairs = (wp * np.cumsum(wn, axis=1)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return pairs / (total_p * total_n)

    return auc


def _indicators(
    n: int, blocks: dict[str, tuple[np.ndarray, np.ndarray, int]]
) -> tuple[Any, dict[str, slice]]:
    """A sparse ``(n, m)`` matrix of one-hot blocks ``values * onehot(keys, size)``, and each block's columns.

    Multiplying the resampling weights by it sums every per-class and per-bin quantity at once.
    """
    from scipy import sparse

    rows, cols, vals, where = [], [], [], {}
    offset = 0
    for name, (keys, values, size) in blocks.items():
        rows.append(np.arange(n))
        cols.append(offset + keys)
        vals.append(values)
        where[name] = slice(offset, offset + size)
        offset += size
    matrix = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, offset)
    )
    return matrix.T.tocsr(), where


def classification_statistics(
    probs: np.ndarray,
    target: np.ndarray,
    *,
    top_k: int = 5,
    n_bins: int = 15,
    with_auroc: bool = True,
) -> Statistics:
    """The classification metrics of :mod:`ember.metrics` as weighted statistics.

    ``accuracy``, ``top{k}_accuracy`` (K > k), ``precision_macro``, ``recall_macro``, ``f1_macro``,
    ``ece`` (``n_bins`` bins, torchmetrics' binning) and, with ``with_auroc``, ``auroc`` (one-vs-rest
    over the classes present in ``target``; it costs a sort-ordered pass per class, the rest one sparse
    product). The all-ones weights reproduce the torchmetrics functions' values (tested).

    Args:
        probs: ``(n, K)`` class probabilities.
        target: ``(n,)`` class ids.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(target).astype(np.int64)
    n, k = probs.shape
    pred = probs.argmax(axis=1)
    correct = (pred == y).astype(np.float64)
    conf = probs.max(axis=1)
    bins = np.searchsorted(np.linspace(0, 1, n_bins + 1), conf, side="right") - 1  # torchmetrics' buckets
    zeros, ones = np.zeros(n, dtype=np.int64), np.ones(n)
    blocks = {
        "correct": (zeros, correct, 1),
        "support": (y, ones, k),
        "predicted": (pred, ones, k),
        "tp": (y, correct, k),
        "bin_gap": (bins, correct - conf, n_bins + 1),
    }
    top_name = f"top{top_k}_accuracy"
    if k > top_k:
        # ties broken as scikit-learn's top_k_accuracy_score (and torchmetrics) break them: higher class first
        ranked = np.argsort(probs, axis=1, kind="stable")[:, ::-1][:, :top_k]
        blocks[top_name] = (zeros, (ranked == y[:, None]).any(axis=1).astype(np.float64), 1)
    sums_matrix, where = _indicators(n, blocks)
    counts = np.bincount(y, minlength=k)
    present = np.flatnonzero((counts > 0) & (counts < n))
    aucs = [_auroc_statistic(probs[:, c], y == c) for c in present] if with_auroc else []

    def statistics(w: np.ndarray) -> dict[str, np.ndarray]:
        total = w.sum(axis=1)
        sums = np.asarray(sums_matrix @ w.T).T  # (B, m): every block summed over examples
        out = {"accuracy": sums[:, where["correct"]][:, 0] / total}
        if top_name in where:
            out[top_name] = sums[:, where[top_name]][:, 0] / total
        support, predicted, tp = sums[:, where["support"]], sums[:, where["predicted"]], sums[:, where["tp"]]
        fp, fn = predicted - tp, support - tp
        used = (tp + fp + fn) > 0  # as torchmetrics and scikit-learn: classes seen in truth or predictions
        with np.errstate(invalid="ignore", divide="ignore"):
            prec = np.where(predicted > 0, tp / predicted, 0.0)
            rec = np.where(support > 0, tp / support, 0.0)
            f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
            count = used.sum(axis=1)
            out["precision_macro"] = (prec * used).sum(axis=1) / count
            out["recall_macro"] = (rec * used).sum(axis=1) / count
            out["f1_macro"] = (f1 * used).sum(axis=1) / count
        out["ece"] = np.abs(sums[:, where["bin_gap"]]).sum(axis=1) / total
        if aucs:
            with warnings.catch_warnings():  # a resample may lose every class's positives or negatives
                warnings.simplefilter("ignore", RuntimeWarning)
                out["auroc"] = np.nanmean(np.stack([auc(w) for auc in aucs]), axis=0)
        return out

    return statistics


def regression_statistics(pred: np.ndarray, target: np.ndarray) -> Statistics:
    """``mse``, ``mae`` and ``r2`` (uniform over outputs) as weighted statistics.

    Args:
        pred, target: ``(n,)`` or ``(n, D)`` arrays of one shape.
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"predictions {p.shape} and targets {t.shape} must have one shape")
    if p.ndim == 1:
        p, t = p[:, None], t[:, None]
    err = p - t
    sq, ab = (err**2).mean(axis=1), np.abs(err).mean(axis=1)
    # R² on values standardized by the target (it does not change), with torchmetrics' rule for a
    # (near-)constant target: 1 for a perfect fit, else 0; see ember.metrics.r2
    centered = t - t.mean(axis=0)
    scale = t.std(axis=0, ddof=1) if len(t) > 1 else np.ones(t.shape[1])
    scale = np.where(scale > 0, scale, 1.0)
    z_err, z_t = err / scale, centered / scale

    def statistics(w: np.ndarray) -> dict[str, np.ndarray]:
        total = w.sum(axis=1, keepdims=True)
        rss = w @ z_err**2
        tss = w @ z_t**2 - (w @ z_t) ** 2 / total
        with np.errstate(invalid="ignore", divide="ignore"):
            r2 = np.where(rss > 1e-4, np.where(tss > 1e-4, 1 - rss / tss, 0.0), 1.0)
        return {"mse": w @ sq / total[:, 0], "mae": w @ ab / total[:, 0], "r2": r2.mean(axis=1)}

    return statistics


# --------------------------------------------------------------------------- what a task hands the stages


@dataclass(frozen=True)
class Evidence:
    """One model's metrics on one split as weighted statistics over ``n`` resampling units.

    A unit is what the bootstrap draws: an example, an image, a sentence pair or a block of text
    (see :mod:`ember.metrics.lm` for why a language model's unit is a block, not a token).
    """

    statistics: Statistics
    n: int
    unit: str = "examples"
    note: str = ""
    """One sentence on what a unit is, or on a metric left without an interval (empty: nothing)."""
    points: dict[str, float] = field(default_factory=dict)
    """Metrics shown without an interval (too costly to resample), by name."""
    correct: np.ndarray | None = None
    """``(n,)`` bool, whether each unit was answered right, when that is defined (McNemar's test)."""


@dataclass(frozen=True)
class BaselineEvidence:
    """A baseline scored on the same units as the model: its name, what exactly it is, its statistics."""

    name: str
    description: str
    statistics: Statistics
    points: dict[str, float] = field(default_factory=dict)
    """Metrics shown without an interval, as in :class:`Evidence`."""


__all__ = [
    "BaselineEvidence",
    "Evidence",
    "Statistics",
    "classification_statistics",
    "regression_statistics",
]
