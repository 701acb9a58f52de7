"""Group fairness of a classifier's predictions: per-group metrics and the gaps between groups.

Every number is a weighted statistic in :mod:`ember.evaluate.stats`'s sense (a function of how
often each example is drawn), so one matrix product per chunk of bootstrap resamples gives each
per-group metric and each gap its percentile interval, and the all-ones row gives the point value.

Per group: ``count``, ``accuracy``, ``selection_rate`` (share predicted positive), ``tpr`` (recall
of the positive class), ``fpr``, and calibration: ``ece`` (15 equal-width bins of top-class
confidence, as :func:`ember.metrics.calibration_error`) and, for two classes,
``calibration_gap`` (mean predicted probability of the positive class minus its observed rate).

Gaps, with Fairlearn's definitions (``fairlearn.metrics``): ``demographic_parity_difference`` (largest
minus smallest selection rate), ``demographic_parity_ratio`` (smallest over largest),
``equalized_odds_difference`` (the larger of the TPR and FPR differences) and ``equalized_odds_ratio``
(the smaller of the two ratios). With k > 2 classes each class is one-vs-rest and the per-group
metrics are named ``selection_rate/<class>`` (and so on); a gap is the worst class's.

Example:
    >>> import numpy as np
    >>> y, pred = np.array([1, 0, 1, 0, 1, 0]), np.array([1, 0, 1, 1, 0, 0])
    >>> sex = np.array(["f", "f", "f", "m", "m", "m"])
    >>> report = audit(y, pred, {"sex": sex}, n_resamples=50)[0]
    >>> round(report.gaps["demographic_parity_difference"].value, 4)
    0.3333
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.evaluate.stats import Interval, bootstrap

N_BINS = 15
RATES = ("selection_rate", "tpr", "fpr")
GAPS = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
)


@dataclass
class GroupAudit:
    """One sensitive attribute (or an intersection of several): its groups and gaps.

    Attributes:
        attribute: the column name, or ``"sex & race"`` for an intersection.
        groups: group names in sorted order.
        counts: examples per group.
        by_group: ``{group: {metric: Interval}}``.
        gaps: ``{gap: Interval}`` (see the module docstring).
        classes: class names; ``positive`` the index of the positive class when there are two.
    """

    attribute: str
    groups: list[str]
    counts: dict[str, int]
    by_group: dict[str, dict[str, Interval]]
    gaps: dict[str, Interval]
    classes: list[str]
    positive: int | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every interval as ``{value, low, high}``."""
        return {
            "attribute": self.attribute,
            "groups": self.groups,
            "counts": self.counts,
            "classes": self.classes,
            "positive": self.positive,
            "by_group": {g: {k: _ci(v) for k, v in m.items()} for g, m in self.by_group.items()},
            "gaps": {k: _ci(v) for k, v in self.gaps.items()},
            "notes": self.notes,
        }


def _ci(ci: Interval) -> dict[str, float]:
    return {"value": ci.value, "low": ci.low, "high": ci.high}


def encode_groups(values: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, list[str]]:
    """``(N,)`` raw values -> ``(N,)`` int codes and the sorted group names they index."""
    names = np.asarray([str(v) for v in values])
    groups, codes = np.unique(names, return_inverse=True)
    return codes.astype(np.int64), [str(g) for g in groups]


def intersect(columns: Mapping[str, Sequence[Any] | np.ndarray]) -> np.ndarray:
    """One group label per example for the intersection of several columns (``"f & black"``)."""
    parts = [np.asarray([str(v) for v in col]) for col in columns.values()]
    out = parts[0].astype(object)
    for part in parts[1:]:
        out = out + " & " + part.astype(object)
    return out.astype(str)


def group_statistics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    codes: np.ndarray,
    num_groups: int,
    num_classes: int,
    *,
    probs: np.ndarray | None = None,
    positive: int | None = None,
    class_names: Sequence[str] | None = None,
    group_names: Sequence[str] | None = None,
) -> Any:
    """The per-group metrics and gaps as one weighted statistic ``(B, n) -> {name: (B,)}``.

    Names are ``<group>/<metric>`` for per-group metrics and the bare gap names for gaps.
    """
    n, k, m = len(y_true), num_classes, num_groups
    classes = list(class_names) if class_names is not None else [str(c) for c in range(k)]
    gnames = list(group_names) if group_names is not None else [str(g) for g in range(m)]
    index = np.arange(n)
    # columns: (group, predicted class) | (group, true class) | (group, correct class) | calibration
    pred_cols = codes * k + y_pred
    true_cols = m * k + codes * k + y_true
    hit_cols = 2 * m * k + codes * k + y_true
    width = 3 * m * k
    calib_cols = None
    if probs is not None:
        conf = probs.max(axis=1)
        bins = np.clip(np.searchsorted(np.linspace(0, 1, N_BINS + 1), conf, side="left") - 1, 0, N_BINS - 1)
        calib_cols = width + codes * N_BINS + bins
        width += m * N_BINS
    matrix = np.zeros((n, width + (m if probs is not None and k == 2 else 0)))
    matrix[index, pred_cols] = 1.0
    matrix[index, true_cols] = 1.0
    correct = y_pred == y_true
    matrix[index[correct], hit_cols[correct]] = 1.0
    if probs is not None and calib_cols is not None:
        matrix[index, calib_cols] = probs.max(axis=1) - correct
        if k == 2 and positive is not None:  # mean predicted P(positive) minus the positive indicator
            matrix[index, width + codes] = probs[:, positive] - (y_true == positive)
    group_of = np.zeros((n, m))
    group_of[index, codes] = 1.0

    def statistics(w: np.ndarray) -> dict[str, np.ndarray]:
        sums = w @ matrix  # (B, width)
        size = w @ group_of  # (B, m)
        b = len(w)
        selected = sums[:, : m * k].reshape(b, m, k)
        actual = sums[:, m * k : 2 * m * k].reshape(b, m, k)
        hits = sums[:, 2 * m * k : 3 * m * k].reshape(b, m, k)
        with np.errstate(divide="ignore", invalid="ignore"):
            count = size[:, :, None]
            sel = selected / count
            tpr = hits / actual
            fpr = (selected - hits) / (count - actual)
            acc = hits.sum(axis=2) / size
            out: dict[str, np.ndarray] = {}
            for g, name in enumerate(gnames):
                out[f"{name}/accuracy"] = acc[:, g]
                for metric, values in (("selection_rate", sel), ("tpr", tpr), ("fpr", fpr)):
                    if positive is not None:
                        out[f"{name}/{metric}"] = values[:, g, positive]
                    else:
                        for c, cname in enumerate(classes):
                            out[f"{name}/{metric}/{cname}"] = values[:, g, c]
            if calib_cols is not None:
                calib = np.abs(sums[:, 3 * m * k : 3 * m * k + m * N_BINS].reshape(b, m, N_BINS))
                ece = calib.sum(axis=2) / size
                for g, name in enumerate(gnames):
                    out[f"{name}/ece"] = ece[:, g]
                    if k == 2 and positive is not None:
                        out[f"{name}/calibration_gap"] = sums[:, 3 * m * k + m * N_BINS + g] / size[:, g]
            chosen = [positive] if positive is not None else list(range(k))
            out.update(_gaps(sel[:, :, chosen], tpr[:, :, chosen], fpr[:, :, chosen]))
        return out

    return statistics


def _gaps(sel: np.ndarray, tpr: np.ndarray, fpr: np.ndarray) -> dict[str, np.ndarray]:
    """``(B, groups, classes)`` rates -> the worst class's gaps (NaN groups are left out)."""

    def spread(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(divide="ignore", invalid="ignore"):
            hi, lo = np.nanmax(x, axis=1), np.nanmin(x, axis=1)  # (B, classes)
            ratio = np.where(hi > 0, lo / hi, 1.0)  # Fairlearn: 0/0 counts as parity
        return np.max(hi - lo, axis=1), np.min(ratio, axis=1)

    import warnings

    with warnings.catch_warnings():  # a class no group predicts in a resample: all-NaN slices
        warnings.simplefilter("ignore", RuntimeWarning)
        dp_diff, dp_ratio = spread(sel)
        tpr_diff, tpr_ratio = spread(tpr)
        fpr_diff, fpr_ratio = spread(fpr)
    return {
        "demographic_parity_difference": dp_diff,
        "demographic_parity_ratio": dp_ratio,
        "equalized_odds_difference": np.maximum(tpr_diff, fpr_diff),
        "equalized_odds_ratio": np.minimum(tpr_ratio, fpr_ratio),
    }


def audit(
    y_true: np.ndarray | Sequence[int],
    y_pred: np.ndarray | Sequence[int],
    sensitive: Mapping[str, Sequence[Any] | np.ndarray],
    *,
    probs: np.ndarray | None = None,
    classes: Sequence[str] | None = None,
    positive: int | None = None,
    intersection: bool = True,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[GroupAudit]:
    """Per-group metrics and gaps, with bootstrap intervals, for each sensitive attribute.

    Args:
        y_true, y_pred: ``(N,)`` class ids.
        sensitive: ``{column: (N,) values}``; each column is audited, and their intersection too
            when there are several and ``intersection`` is set.
        probs: optional ``(N, K)`` probabilities, for the calibration metrics.
        classes: class names (default ``0 .. K-1``).
        positive: the positive class of a two-class problem (default 1); ignored for k > 2.
        n_resamples, confidence, seed: of the bootstrap (examples are resampled).

    Returns:
        One :class:`GroupAudit` per attribute (then the intersection).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be (N,) class ids; got {y_true.shape} and {y_pred.shape}")
    k = max(
        int(probs.shape[1]) if probs is not None else 0,
        len(classes) if classes is not None else 0,
        int(max(y_true.max(initial=0), y_pred.max(initial=0))) + 1,
        2,
    )
    names = list(classes) if classes is not None else [str(c) for c in range(k)]
    pos = (1 if positive is None else positive) if k == 2 else None
    columns = dict(sensitive)
    for name, col in columns.items():
        if len(col) != len(y_true):
            raise ValueError(f"sensitive column '{name}' has {len(col)} values for {len(y_true)} predictions")
    if intersection and len(columns) > 1:
        columns[" & ".join(columns)] = intersect(dict(sensitive))
    reports = []
    for attribute, values in columns.items():
        codes, groups = encode_groups(values)
        stats = group_statistics(
            y_true, y_pred, codes, len(groups), k,
            probs=probs, positive=pos, class_names=names, group_names=groups,
        )  # fmt: skip
        intervals = bootstrap(stats, len(y_true), n_resamples=n_resamples, confidence=confidence, seed=seed)
        by_group = {
            g: {key.split("/", 1)[1]: ci for key, ci in intervals.items() if key.startswith(f"{g}/")}
            for g in groups
        }
        counts = {g: int(c) for g, c in zip(groups, np.bincount(codes, minlength=len(groups)))}
        notes = [
            f"group '{g}' has only {c} examples: its interval is wide" for g, c in counts.items() if c < 30
        ]
        reports.append(
            GroupAudit(
                attribute, groups, counts, by_group, {g: intervals[g] for g in GAPS}, names, pos, notes
            )
        )
    return reports


def gap(
    y_pred: np.ndarray,
    codes: np.ndarray,
    y_true: np.ndarray | None = None,
    *,
    kind: str = "demographic_parity",
) -> float:
    """One gap, no interval: ``demographic_parity`` or ``equalized_odds`` difference (worst class).

    A cheap check for training-time monitoring and threshold search.
    """
    y_pred = np.asarray(y_pred, dtype=np.int64)
    truth = y_pred if y_true is None else np.asarray(y_true, dtype=np.int64)
    k = max(int(y_pred.max(initial=0)) + 1, int(truth.max(initial=0)) + 1, 2)
    stats = group_statistics(truth, y_pred, codes, int(codes.max()) + 1, k, positive=1 if k == 2 else None)
    return float(stats(np.ones((1, len(y_pred))))[f"{kind}_difference"][0])


__all__ = ["GAPS", "GroupAudit", "audit", "encode_groups", "gap", "group_statistics", "intersect"]
