"""How sure is a number: bootstrap confidence intervals, the paired bootstrap, and McNemar's test.

The bootstrap here resamples *examples*: each resample draws ``n`` example indices with replacement
and recomputes the metric. Metrics are given as **weighted statistics**: a function from a
``(B, n)`` array of multiplicities (how often each example was drawn in each of ``B`` resamples) to
``{name: (B,) values}``. One pass of matrix sums then scores a whole chunk of resamples at once, and
the all-ones row gives the point estimate. :func:`classification_statistics` and
:func:`regression_statistics` provide the task metrics in this form.

- :func:`bootstrap`: percentile intervals (``np.quantile``, linear) — the same numbers as
  ``scipy.stats.bootstrap(..., method="percentile")`` given the same generator (tested).
- :func:`paired_bootstrap`: both models scored on the *same* resamples; the interval of B - A and a
  two-sided p-value for "no difference" (the share of centered resampled differences at least as far
  from 0 as the observed one, ``(1 + count) / (1 + B)``).
- :func:`mcnemar`: the exact binomial test when the discordant pairs are few (< 25), else the
  continuity-corrected chi-square; only the examples the two models disagree on count.

Example:
    >>> import numpy as np
    >>> correct = np.r_[np.ones(80), np.zeros(20)]
    >>> ci = bootstrap(lambda w: {"accuracy": w @ correct / len(correct)}, len(correct))["accuracy"]
    >>> ci.value, ci.low < 0.8 < ci.high
    (0.8, True)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

Statistics = Callable[[np.ndarray], dict[str, np.ndarray]]
"""``(B, n)`` example multiplicities -> ``{metric: (B,) values}``."""

MAX_CELLS = 1 << 22  # resamples are drawn in chunks of at most this many (B x n) entries


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval."""

    value: float
    low: float
    high: float
    confidence: float = 0.95

    def __str__(self) -> str:
        if math.isnan(self.low) or math.isnan(self.high):
            return f"{self.value:.4f}"  # no interval (undefined, or not computed)
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"

    def excludes(self, x: float) -> bool:
        """Whether ``x`` lies outside the interval."""
        return not self.low <= x <= self.high


@dataclass(frozen=True)
class PairedTest:
    """B against A on the same examples: both scores, the difference B - A, and its p-value."""

    a: Interval
    b: Interval
    difference: Interval
    p_value: float
    n_resamples: int

    @property
    def significant(self) -> bool:
        """The difference is significant at the interval's level (p below 1 - confidence)."""
        return self.p_value < 1 - self.difference.confidence


@dataclass(frozen=True)
class McNemar:
    """McNemar's test on paired right/wrong outcomes.

    ``b``: examples A got right and B got wrong; ``c``: A wrong, B right. ``exact`` tells which test
    gave ``p_value``; ``statistic`` is the continuity-corrected chi-square (or ``min(b, c)`` if exact).
    """

    b: int
    c: int
    statistic: float
    p_value: float
    exact: bool


def multiplicities(indices: np.ndarray, n: int) -> np.ndarray:
    """``(B, n)`` resampled indices -> ``(B, n)`` counts of each example in each resample."""
    b = indices.shape[0]
    flat = (np.arange(b)[:, None] * n + indices).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def _resamples(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of ``(B, n)`` multiplicities; one generator, drawn in order (chunk size from n)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, MAX_CELLS // max(n, 1))
    done = 0
    while done < n_resamples:
        size = min(chunk, n_resamples - done)
        yield multiplicities(rng.integers(0, n, (size, n)), n)
        done += size


def _interval(value: float, samples: np.ndarray, confidence: float) -> Interval:
    alpha = (1 - confidence) / 2
    finite = samples[~np.isnan(samples)]
    if finite.size == 0:
        return Interval(value, float("nan"), float("nan"), confidence)
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return Interval(value, float(low), float(high), confidence)


def _check(n: int, n_resamples: int, confidence: float) -> None:
    if n < 1:
        raise ValueError("the bootstrap needs at least one example, got none")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def bootstrap(
    statistics: Statistics,
    n: int,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """Percentile bootstrap intervals for every metric ``statistics`` returns.

    Args:
        statistics: ``(B, n)`` multiplicities -> ``{name: (B,) values}`` (see the module docstring).
        n: the number of examples.
        n_resamples: bootstrap resamples (1000 gives interval ends to about ±0.3 of a standard error).
        confidence: the interval's coverage, e.g. 0.95.
        seed: the resampling seed; the same seed gives the same intervals.

    Returns:
        ``{name: Interval}``; resamples where a metric is undefined (NaN) are left out of its interval.
    """
    _check(n, n_resamples, confidence)
    point = {k: float(v[0]) for k, v in statistics(np.ones((1, n))).items()}
    draws: dict[str, list[np.ndarray]] = {k: [] for k in point}
    for weights in _resamples(n, n_resamples, seed):
        for k, v in statistics(weights).items():
            draws[k].append(v)
    return {k: _interval(point[k], np.concatenate(draws[k]), confidence) for k in point}


def bootstrap_ci(
    statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """:func:`bootstrap` for one weighted statistic ``(B, n) -> (B,)``.

    Example:
        >>> scores = np.arange(10.0)
        >>> str(bootstrap_ci(lambda w: w @ scores / 10, 10, seed=1))
        '4.5000 [2.7000, 6.3000]'
    """
    return bootstrap(
        lambda w: {"x": statistic(w)}, n, n_resamples=n_resamples, confidence=confidence, seed=seed
    )["x"]


def paired_bootstrap(
    statistics_a: Statistics,
    statistics_b: Statistics,
    n: int,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, PairedTest]:
    """B against A on the same resamples of the same ``n`` examples, for every metric both return.

    The p-value is two-sided for "B and A score the same": the resampled differences are centered on
    the observed one, and the p-value is the share of them at least as far from it as it is from 0,
    ``(1 + count) / (1 + n_resamples)`` (so never below ``1 / (1 + n_resamples)``).
    """
    _check(n, n_resamples, confidence)
    ones = np.ones((1, n))
    point_a = {k: float(v[0]) for k, v in statistics_a(ones).items()}
    point_b = {k: float(v[0]) for k, v in statistics_b(ones).items()}
    names = [k for k in point_a if k in point_b]
    draws: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {k: ([], []) for k in names}
    for weights in _resamples(n, n_resamples, seed):
        a, b = statistics_a(weights), statistics_b(weights)
        for k in names:
            draws[k][0].append(a[k])
            draws[k][1].append(b[k])
    out = {}
    for k in names:
        a_s, b_s = np.concatenate(draws[k][0]), np.concatenate(draws[k][1])
        delta = point_b[k] - point_a[k]
        d_s = b_s - a_s
        finite = d_s[~np.isnan(d_s)]
        if finite.size == 0 or math.isnan(delta):
            p = float("nan")
        else:
            far = np.count_nonzero(np.abs(finite - delta) >= abs(delta) - 1e-12 * max(1.0, abs(delta)))
            p = (1 + far) / (1 + finite.size)
        out[k] = PairedTest(
            a=_interval(point_a[k], a_s, confidence),
            b=_interval(point_b[k], b_s, confidence),
            difference=_interval(delta, d_s, confidence),
            p_value=float(min(1.0, p)),
            n_resamples=n_resamples,
        )
    return out


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray, *, exact: bool | None = None) -> McNemar:
    """McNemar's test: do A and B err on the same examples equally often?

    Args:
        correct_a, correct_b: ``(n,)`` booleans, whether each model got each example right.
        exact: force the exact binomial test (True) or the chi-square (False); None picks exact when
            fewer than 25 examples are discordant.

    Example:
        >>> a = np.array([1] * 50 + [0] * 10 + [1] * 2, dtype=bool)
        >>> b = np.array([1] * 50 + [1] * 10 + [0] * 2, dtype=bool)
        >>> r = mcnemar(a, b); (r.b, r.c, r.exact, round(r.p_value, 4))
        (2, 10, True, 0.0386)
    """
    a, b_ = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape or a.ndim != 1:
        raise ValueError(f"expected two (n,) arrays of one length, got {a.shape} and {b_.shape}")
    b = int(np.count_nonzero(a & ~b_))
    c = int(np.count_nonzero(~a & b_))
    m = b + c
    use_exact = m < 25 if exact is None else exact
    if m == 0:
        return McNemar(b, c, 0.0, 1.0, use_exact)
    if use_exact:
        k = min(b, c)  # two-sided binomial test with p = 1/2: twice the smaller tail
        tail = sum(math.comb(m, i) for i in range(k + 1)) / 2**m
        return McNemar(b, c, float(k), min(1.0, 2 * tail), True)
    statistic = (abs(b - c) - 1) ** 2 / m
    return McNemar(b, c, float(statistic), math.erfc(math.sqrt(statistic / 2)), False)  # chi2(1) tail


# --------------------------------------------------------------------------- task metrics as statistics


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


# --------------------------------------------------------------------------- what a task family resamples


@dataclass(frozen=True)
class Evidence:
    """One model's metrics on one split as weighted statistics over ``n`` resampling units.

    A unit is what the bootstrap draws: an example, an image, or a block of text (see
    :mod:`ember.evaluate.language_model` for why a language model's unit is a block, not a token).
    """

    statistics: Statistics
    n: int
    unit: str = "examples"
    note: str = ""
    """One sentence on what a unit is, shown under the scorecard (empty: nothing to add)."""


@dataclass(frozen=True)
class BaselineEvidence:
    """A baseline scored on the same units as the model: its name, what exactly it is, its statistics."""

    name: str
    description: str
    statistics: Statistics


__all__ = [
    "BaselineEvidence",
    "Evidence",
    "Interval",
    "McNemar",
    "PairedTest",
    "Statistics",
    "bootstrap",
    "bootstrap_ci",
    "classification_statistics",
    "mcnemar",
    "multiplicities",
    "paired_bootstrap",
    "regression_statistics",
]
