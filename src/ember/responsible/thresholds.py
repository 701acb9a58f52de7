"""Fairness after training: per-group decision rules fitted on held-out scores.

:func:`fit_thresholds` learns, for each group, how its scores become a class so that the chosen
rates are equal across groups, picking the common rate that keeps accuracy highest on the data it
is fitted on (a validation split, not the test split). Two classes: one threshold per group on
P(positive) at the group's quantile for the common rate (demographic parity: rate among all of the
group; equal opportunity: among its true positives). k classes: per-group offsets added to the
log-probabilities, found by iterative proportional fitting so that every group's predicted class
shares match one common distribution (demographic parity for k classes); the common distribution
is a mix of the pooled predicted shares and the true class shares, the mix chosen for accuracy.

The rules are deterministic (Fairlearn's ThresholdOptimizer randomizes between two thresholds and
is binary only).

Example:
    >>> rng = np.random.default_rng(0)
    >>> groups = rng.integers(0, 2, 2000); y = (rng.random(2000) < 0.2 + 0.2 * groups).astype(int)
    >>> probs = np.stack([1 - (0.5 * y + 0.3 * rng.random(2000)), 0.5 * y + 0.3 * rng.random(2000)], 1)
    >>> rule = fit_thresholds(probs, y, groups)
    >>> pred = rule.predict(probs, groups)
    >>> bool(abs(pred[groups == 0].mean() - pred[groups == 1].mean()) < 0.02)
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Criterion = Literal["demographic-parity", "equal-opportunity"]


@dataclass
class GroupRule:
    """A fitted per-group decision rule.

    Attributes:
        thresholds: ``(G,)`` thresholds on P(positive) (two classes), else None.
        offsets: ``(G, K)`` log-probability offsets (k classes), else None.
        rate: the common selection rate (two classes) or class distribution (k classes).
    """

    thresholds: np.ndarray | None
    offsets: np.ndarray | None
    rate: Any
    criterion: str

    def predict(self, probs: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """``(N, K)`` probabilities and ``(N,)`` group codes -> ``(N,)`` classes."""
        groups = np.asarray(groups, dtype=np.int64)
        if self.thresholds is not None:
            return (probs[:, 1] >= self.thresholds[groups]).astype(np.int64)
        assert self.offsets is not None
        return (np.log(np.clip(probs, 1e-12, None)) + self.offsets[groups]).argmax(1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "criterion": self.criterion,
            "thresholds": None if self.thresholds is None else self.thresholds.tolist(),
            "offsets": None if self.offsets is None else self.offsets.tolist(),
            "rate": np.asarray(self.rate).tolist(),
        }


def fit_thresholds(
    probs: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    criterion: Criterion = "demographic-parity",
    grid: int = 101,
    num_groups: int | None = None,
) -> GroupRule:
    """Fit per-group rules on ``(N, K)`` probabilities, labels and group codes (see the module docstring).

    ``num_groups`` (default: the largest code + 1) covers groups absent here that the rule will meet
    later; they keep the plain decision (threshold 0.5, no offsets).
    """
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    m = max(int(groups.max()) + 1, num_groups or 0)
    if probs.shape[1] > 2:
        if criterion != "demographic-parity":
            raise ValueError(f"k-class rules support demographic-parity only, got {criterion!r}")
        return _fit_offsets(probs, y, groups, m, grid=max(5, grid // 10))
    score = probs[:, 1]
    best: tuple[float, float, np.ndarray] | None = None
    for rate in np.linspace(0.0, 1.0, grid)[1:-1]:
        thresholds = np.array([_threshold(score, y, groups == g, rate, criterion) for g in range(m)])
        acc = float(np.mean((score >= thresholds[groups]) == y))
        if best is None or acc > best[0]:
            best = (acc, float(rate), thresholds)
    assert best is not None
    return GroupRule(best[2], None, best[1], criterion)


def _threshold(score: np.ndarray, y: np.ndarray, member: np.ndarray, rate: float, criterion: str) -> float:
    pool = score[member & (y == 1)] if criterion == "equal-opportunity" else score[member]
    if not len(pool):
        return 0.5
    return float(np.quantile(pool, 1.0 - rate, method="higher"))


def _fit_offsets(probs: np.ndarray, y: np.ndarray, groups: np.ndarray, m: int, *, grid: int) -> GroupRule:
    logp = np.log(np.clip(probs, 1e-12, None))
    k = probs.shape[1]
    pooled = np.bincount(probs.argmax(1), minlength=k) / len(y)
    truth = np.bincount(y, minlength=k) / len(y)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for mix in np.linspace(0.0, 1.0, grid):
        target = np.clip((1 - mix) * pooled + mix * truth, 1e-6, None)
        offsets = np.stack([_proportional_fit(logp[groups == g], target) for g in range(m)])  # (G, K)
        acc = float(np.mean((logp + offsets[groups]).argmax(1) == y))
        if best is None or acc > best[0]:
            best = (acc, target, offsets)
    assert best is not None
    return GroupRule(None, best[2], best[1], "demographic-parity")


def _proportional_fit(logp: np.ndarray, target: np.ndarray, *, iterations: int = 200) -> np.ndarray:
    """Offsets ``b`` with ``argmax(logp + b)`` shares close to ``target`` (multiplicative updates)."""
    b = np.zeros(logp.shape[1])
    if not len(logp):
        return b
    for i in range(iterations):
        shares = np.bincount((logp + b).argmax(1), minlength=len(b)) / len(logp)
        if np.abs(shares - target).max() < 0.5 / len(logp) + 1e-3:
            break
        b += 0.5 / np.sqrt(i + 1) * (np.log(target) - np.log(np.clip(shares, 1e-6, None)))
    return b


__all__ = ["GroupRule", "fit_thresholds"]
