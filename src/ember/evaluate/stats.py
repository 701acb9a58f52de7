"""How sure is a number: bootstrap confidence intervals, the paired bootstrap, and McNemar's test.

The bootstrap here resamples *examples*: each resample draws ``n`` example indices with replacement
and recomputes the metric. Metrics are given as **weighted statistics**: a function from a
``(B, n)`` array of multiplicities (how often each example was drawn in each of ``B`` resamples) to
``{name: (B,) values}``. One pass of matrix sums then scores a whole chunk of resamples at once, and
the all-ones row gives the point estimate. A task gives its metrics in this form
(:mod:`ember.metrics.statistics`, ``ember.tasks.contract.evidence``).

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ember.metrics.statistics import Statistics

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


__all__ = [
    "Interval",
    "McNemar",
    "PairedTest",
    "bootstrap",
    "bootstrap_ci",
    "mcnemar",
    "multiplicities",
    "paired_bootstrap",
]
