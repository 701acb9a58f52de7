"""Selective prediction: answer only when confident enough, and what that buys (the risk–coverage curve).

Examples are ranked by the model's confidence (the largest softmax probability). Abstaining below a
threshold keeps ``coverage`` of them, and the error rate among those kept is the ``risk``; the curve
of risk against coverage, and its area (AURC, lower is better), show how well confidence ranks
mistakes. :func:`threshold_for_risk` finds the lowest threshold whose kept examples meet a target
risk (fitted on validation data). :func:`abstain_filter` is a serving safety filter that flags
``abstain`` on outputs under the threshold (``ember serve --abstain-below``), counted in /metrics.

Example:
    >>> import numpy as np
    >>> probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45]]); y = np.array([0, 1, 1, 0])
    >>> curve = risk_coverage(probs, y)
    >>> curve.coverage.tolist(), curve.risk.tolist()
    ([0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 0.3333333333333333, 0.25])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class RiskCoverage:
    """Confidence thresholds (descending) and, keeping examples at or above each, coverage and risk."""

    thresholds: np.ndarray
    coverage: np.ndarray
    risk: np.ndarray

    @property
    def aurc(self) -> float:
        """Area under the risk–coverage curve (the mean of the risks at each coverage step)."""
        return float(np.mean(self.risk))

    def at(self, threshold: float) -> tuple[float, float]:
        """``(coverage, risk)`` when abstaining below ``threshold``."""
        kept = self.thresholds >= threshold
        if not kept.any():
            return 0.0, float("nan")
        i = int(np.flatnonzero(kept)[-1])
        return float(self.coverage[i]), float(self.risk[i])


def risk_coverage(probs: np.ndarray, y: np.ndarray) -> RiskCoverage:
    """The risk–coverage curve of ``(N, K)`` probabilities against ``(N,)`` labels."""
    probs, y = np.asarray(probs), np.asarray(y)
    confidence = probs.max(1)
    order = np.argsort(-confidence, kind="stable")
    wrong = (probs.argmax(1) != y)[order].astype(np.float64)
    n = np.arange(1, len(y) + 1)
    return RiskCoverage(confidence[order], n / len(y), np.cumsum(wrong) / n)


def threshold_for_risk(probs: np.ndarray, y: np.ndarray, target_risk: float) -> float:
    """The lowest confidence threshold whose kept examples have risk <= ``target_risk`` (1.0 if none)."""
    curve = risk_coverage(probs, y)
    ok = np.flatnonzero(curve.risk <= target_risk)
    return float(curve.thresholds[ok[-1]]) if len(ok) else 1.0


def abstain_filter(threshold: float) -> Callable[[torch.Tensor], Sequence[str | None]]:
    """A serving safety filter: ``abstain`` for each output row whose softmax maximum is under ``threshold``."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"the abstain threshold is a probability in [0, 1], got {threshold}")

    def flags(outputs: torch.Tensor) -> list[str | None]:
        if outputs.dim() != 2:
            return [None] * len(outputs)
        confidence = outputs.float().softmax(1).max(1).values
        return ["abstain" if c < threshold else None for c in confidence.tolist()]

    return flags


def selective_run(ref: str, *, target_risk: float = 0.01, runs_dir: Any = None) -> dict[str, Any]:
    """A run's risk–coverage on its test split, with the threshold for ``target_risk`` fitted on val.

    Returns:
        JSON-ready: AURC, the curve at a few coverages, the fitted threshold and the test coverage
        and risk under it.
    """
    from ember.evaluate import run_predictions
    from ember.responsible.fairness_run import _classifier_outputs

    test = run_predictions(ref, "test", runs_dir=runs_dir)
    probs, y = _classifier_outputs(test)
    val = run_predictions(ref, "val", runs_dir=runs_dir)
    vprobs, vy = _classifier_outputs(val)
    threshold = threshold_for_risk(vprobs, vy, target_risk)
    curve = risk_coverage(probs, y)
    coverage, risk = curve.at(threshold)
    points = []
    for c in (0.5, 0.8, 0.9, 0.95, 1.0):
        i = max(0, int(np.ceil(c * len(y))) - 1)
        points.append(
            {
                "coverage": float(curve.coverage[i]),
                "risk": float(curve.risk[i]),
                "threshold": float(curve.thresholds[i]),
            }
        )
    return {
        "run": test.record.id,
        "aurc": curve.aurc,
        "curve": points,
        "target_risk": target_risk,
        "threshold": threshold,
        "test_coverage": coverage,
        "test_risk": risk,
    }


__all__ = ["RiskCoverage", "abstain_filter", "risk_coverage", "selective_run", "threshold_for_risk"]
