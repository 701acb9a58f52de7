"""Distribution shift between two datasets: per-feature KS, MMD, a classifier two-sample test, labels.

Each test answers "could ``reference`` and ``current`` come from one distribution?" with a p-value
that is valid under that null hypothesis:

- **ks**: a two-sample Kolmogorov-Smirnov test per feature, corrected for testing many features
  (Holm by default, which controls the chance of any false alarm; ``bh`` controls the false
  discovery rate). Its p-value is the smallest corrected one.
- **mmd**: the maximum mean discrepancy with a Gaussian kernel (median-distance bandwidth) on
  standardized features; the p-value counts label permutations at least as extreme
  (``(1 + #{perm >= observed}) / (1 + permutations)``), so it is exact up to Monte Carlo error.
- **classifier**: a shrinkage linear discriminant trained on half the pooled data to tell the two sets apart;
  its AUC on the other half, with the Mann-Whitney p-value (valid: the held-out half never touched
  the model).
- **labels** (when both label arrays are given): a chi-square test of the class counts.

``method="all"`` runs every test that applies and combines them with Bonferroni: shift is declared
when ``min(p) * number_of_tests < alpha``, so the false-alarm rate stays at most ``alpha``.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> same = shift_test(rng.normal(size=(200, 5)), rng.normal(size=(100, 5)))
    >>> moved = shift_test(rng.normal(size=(200, 5)), rng.normal(0.5, 1, size=(100, 5)))
    >>> same.shifted, moved.shifted
    (False, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Method = Literal["all", "ks", "mmd", "classifier", "labels"]
TESTS = ("ks", "mmd", "classifier", "labels")
EXACT_KS_LIMIT = 10_000_000  # N * M up to which KS p-values are exact (about 10 ms a feature)


@dataclass
class ShiftResult:
    """The verdict of :func:`shift_test` and the evidence of every test that ran.

    Attributes:
        shifted: the combined p-value is below ``alpha``.
        p_value: the combined p-value (Bonferroni over ``tests``).
        alpha: the significance level asked for.
        method: the method asked for.
        tests: test name → ``{"statistic", "p_value", ...details}``.
        n_reference / n_current: examples in each set.
    """

    shifted: bool
    p_value: float
    alpha: float
    method: str
    tests: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_reference: int = 0
    n_current: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "shifted": self.shifted,
            "p_value": self.p_value,
            "alpha": self.alpha,
            "method": self.method,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "tests": self.tests,
        }


def shift_test(
    reference: Any,
    current: Any,
    *,
    alpha: float = 0.05,
    method: Method = "all",
    y_reference: Any = None,
    y_current: Any = None,
    correction: Literal["holm", "bh"] = "holm",
    permutations: int = 200,
    max_samples: int = 1000,
    seed: int = 0,
) -> ShiftResult:
    """Test whether ``current`` comes from the distribution of ``reference``.

    Args:
        reference: ``(N, ...)`` array or tensor; every example is flattened to a feature vector.
        current: ``(M, ...)`` with the same feature shape.
        alpha: false-alarm rate of the combined decision.
        method: ``all`` (every test that applies, Bonferroni-combined) or one of ``ks``, ``mmd``,
            ``classifier``, ``labels``.
        y_reference / y_current: integer class labels, to also test the class prior (``labels``).
        correction: multiple-testing correction of the per-feature KS tests: ``holm`` or ``bh``.
        permutations: permutations of the MMD test (the smallest p-value is ``1 / (1 + permutations)``).
        max_samples: MMD and the classifier use at most this many examples of each set (seeded
            subsample; KS always uses all).
        seed: seeds subsampling, permutations and the classifier's split.

    Returns:
        A :class:`ShiftResult`.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(1).normal(size=(300, 4))
        >>> shift_test(x[:200], x[200:], method="ks").shifted
        False
    """
    ref, cur = _features(reference, "reference"), _features(current, "current")
    if ref.shape[1] != cur.shape[1]:
        raise ValueError(
            f"reference and current must have the same features; got {ref.shape[1]} and {cur.shape[1]} "
            "per example"
        )
    if len(ref) < 2 or len(cur) < 2:
        raise ValueError(f"need at least 2 examples in each set; got {len(ref)} and {len(cur)}")
    has_labels = y_reference is not None and y_current is not None
    if method == "all":
        names = ["ks", "mmd", "classifier"] + (["labels"] if has_labels else [])
    elif method in TESTS:
        names = [method]
    else:
        raise ValueError(f"unknown shift method '{method}'; expected one of all, {', '.join(TESTS)}")
    if "labels" in names and not has_labels:
        raise ValueError("method 'labels' needs y_reference and y_current")
    rng = np.random.default_rng(seed)
    small_ref, small_cur = _subsample(ref, max_samples, rng), _subsample(cur, max_samples, rng)
    tests: dict[str, dict[str, Any]] = {}
    for name in names:
        if name == "ks":
            tests[name] = ks_test(ref, cur, correction=correction)
        elif name == "mmd":
            tests[name] = mmd_test(small_ref, small_cur, permutations=permutations, seed=seed)
        elif name == "classifier":
            tests[name] = classifier_test(small_ref, small_cur, seed=seed)
        else:
            tests[name] = label_test(np.asarray(y_reference), np.asarray(y_current))
    p_value = min(1.0, len(tests) * min(t["p_value"] for t in tests.values()))
    for t in tests.values():
        t["flagged"] = bool(t["p_value"] * len(tests) < alpha)
    return ShiftResult(
        shifted=bool(p_value < alpha),
        p_value=float(p_value),
        alpha=alpha,
        method=method,
        tests=tests,
        n_reference=len(ref),
        n_current=len(cur),
    )


# --------------------------------------------------------------------------- the tests


def ks_test(
    reference: np.ndarray, current: np.ndarray, *, correction: Literal["holm", "bh"] = "holm"
) -> dict[str, Any]:
    """Per-feature two-sample KS tests, corrected over the features tested.

    p-values are exact (scipy) when ``N * M <= 1e7`` and Kolmogorov's conservative limit law above.

    Features constant over both sets carry no evidence and are not counted as tests.

    Returns:
        ``statistic`` (the largest KS distance), ``p_value`` (the smallest corrected p-value),
        ``features_tested``, ``features_flagged`` (corrected p < 0.05) and ``top`` (up to 10
        ``[feature, D, corrected p]``, strongest first).
    """
    ref, cur = _features(reference, "reference"), _features(current, "current")
    varying = np.flatnonzero(np.ptp(np.concatenate([ref, cur]), axis=0) > 0)
    if len(varying) == 0:
        return {"statistic": 0.0, "p_value": 1.0, "features_tested": 0, "features_flagged": 0, "top": []}
    if len(ref) * len(cur) <= EXACT_KS_LIMIT:
        from scipy.stats import ks_2samp

        exact = ks_2samp(ref[:, varying], cur[:, varying], axis=0, method="exact")
        d, raw = np.asarray(exact.statistic), np.asarray(exact.pvalue)
    else:
        d = ks_statistic(ref[:, varying], cur[:, varying])
        raw = ks_pvalue(d, len(ref), len(cur))
    adjusted = holm(raw) if correction == "holm" else benjamini_hochberg(raw)
    order = np.argsort(adjusted, kind="stable")[:10]
    return {
        "statistic": float(d.max()),
        "p_value": float(adjusted.min()),
        "correction": correction,
        "features_tested": len(varying),
        "features_flagged": int((adjusted < 0.05).sum()),
        "top": [[int(varying[i]), round(float(d[i]), 4), float(adjusted[i])] for i in order],
    }


def ks_statistic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The two-sample KS distance of every column: ``(N, F), (M, F) -> (F,)``, ties handled exactly."""
    n, m = len(a), len(b)
    pooled = np.concatenate([a, b])  # (N + M, F)
    order = np.argsort(pooled, axis=0, kind="stable")
    values = np.take_along_axis(pooled, order, axis=0)
    cdf_gap = np.cumsum(np.where(order < n, 1.0 / n, -1.0 / m), axis=0)
    # both ECDFs jump only after the last of a run of equal values; compare them only there
    end_of_run = np.ones(values.shape, dtype=bool)
    end_of_run[:-1] = values[1:] != values[:-1]
    return np.abs(np.where(end_of_run, cdf_gap, 0.0)).max(axis=0)


def ks_pvalue(d: np.ndarray, n: int, m: int) -> np.ndarray:
    """Asymptotic two-sided p-values of KS distances ``d`` between samples of sizes ``n`` and ``m``.

    Kolmogorov's limit law ``Q(sqrt(nm / (n + m)) d)``: fast for any number of features, within
    0.02 of the exact p-value for samples of 100 and more, and at or above it below 0.1 (so it
    adds no false alarms). :func:`ks_test` uses exact p-values (scipy) while ``n * m <= 1e7``.
    """
    from scipy.special import kolmogorov

    return np.clip(kolmogorov(np.sqrt(n * m / (n + m)) * np.asarray(d, dtype=float)), 0.0, 1.0)


def mmd_test(
    reference: np.ndarray, current: np.ndarray, *, permutations: int = 200, seed: int = 0
) -> dict[str, Any]:
    """Gaussian-kernel MMD² (biased estimate) with a permutation p-value.

    Features are standardized with the pooled mean and spread, and the bandwidth is the median
    pooled distance; both are invariant to relabelling, so the permutation test stays exact.
    """
    pooled = _standardize(np.concatenate([reference, current]))  # (n, F)
    n_ref, n = len(reference), len(pooled)
    sq = (pooled**2).sum(1)
    dist2 = np.maximum(sq[:, None] + sq[None, :] - 2 * pooled @ pooled.T, 0.0)  # (n, n)
    off_diagonal = dist2[np.triu_indices(n, 1)]
    bandwidth2 = float(np.median(off_diagonal[off_diagonal > 0])) if (off_diagonal > 0).any() else 1.0
    kernel = np.exp(-dist2 / bandwidth2)
    rng = np.random.default_rng(seed)
    # column 0: the observed split; columns 1..B: random relabellings. MMD² = wᵀ K w with
    # w = 1/N on the reference side and -1/M on the current side.
    members = np.concatenate(
        [np.arange(n)[None, :], rng.random((permutations, n)).argsort(axis=1)]
    )  # (B + 1, n)
    weights = np.full((permutations + 1, n), -1.0 / (n - n_ref))
    np.put_along_axis(weights, members[:, :n_ref], 1.0 / n_ref, axis=1)
    stats = ((weights @ kernel) * weights).sum(axis=1)  # (B + 1,)
    observed = stats[0]
    p_value = (1 + int((stats[1:] >= observed - 1e-12).sum())) / (1 + permutations)
    return {
        "statistic": float(observed),
        "p_value": float(p_value),
        "permutations": permutations,
        "bandwidth": float(np.sqrt(bandwidth2)),
        "n_used": [n_ref, n - n_ref],
    }


def classifier_test(reference: np.ndarray, current: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """Classifier two-sample test: a linear classifier fit on half, AUC and Mann-Whitney p on the rest.

    The classifier is linear discriminant analysis with Ledoit-Wolf shrinkage: closed form, so
    fast enough to run in every check, and stable with more features than examples. An AUC near
    0.5 means the sets cannot be told apart; near 1, they are easy to tell apart.
    """
    from scipy.stats import mannwhitneyu
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x = _standardize(np.concatenate([reference, current]))
    if x.shape[1] == 0:  # every feature constant: nothing to tell the sets apart by
        return {"statistic": 0.5, "auc": 0.5, "p_value": 1.0, "n_fit": 0, "n_test": len(x)}
    y = np.concatenate([np.zeros(len(reference)), np.ones(len(current))])
    rng = np.random.default_rng(seed + 1)
    fit_part = np.zeros(len(y), dtype=bool)
    for label in (0, 1):  # a stratified half of each set trains, the other half judges
        members = rng.permutation(np.flatnonzero(y == label))
        fit_part[members[: len(members) // 2]] = True
    model = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    model.fit(x[fit_part], y[fit_part])
    scores = model.decision_function(x[~fit_part])
    held_y = y[~fit_part]
    pos, neg = scores[held_y == 1], scores[held_y == 0]
    result = mannwhitneyu(pos, neg, alternative="greater", method="asymptotic")
    auc = float(result.statistic) / (len(pos) * len(neg))
    return {
        "statistic": auc,
        "auc": auc,
        "p_value": float(result.pvalue),
        "n_fit": int(fit_part.sum()),
        "n_test": int((~fit_part).sum()),
    }


def label_test(y_reference: np.ndarray, y_current: np.ndarray) -> dict[str, Any]:
    """Chi-square test that both label arrays have the same class proportions."""
    from scipy.stats import chi2_contingency

    classes = np.union1d(y_reference, y_current)
    table = np.stack(
        [
            (y_reference[:, None] == classes[None, :]).sum(0),
            (y_current[:, None] == classes[None, :]).sum(0),
        ]
    )  # (2, K)
    if len(classes) < 2:
        return {"statistic": 0.0, "p_value": 1.0, "classes": classes.tolist(), "counts": table.tolist()}
    chi2, p_value, dof, expected = chi2_contingency(table, correction=False)
    return {
        "statistic": float(chi2),
        "p_value": float(p_value),
        "dof": int(dof),
        "classes": classes.tolist(),
        "counts": table.tolist(),
        "min_expected": float(expected.min()),
    }


# --------------------------------------------------------------------------- helpers


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error control under any dependence)."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate control)."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    out = np.empty(m)
    out[order] = adjusted
    return out


def _features(data: Any, name: str) -> np.ndarray:
    array = data.detach().cpu().numpy() if hasattr(data, "detach") else np.asarray(data)
    if array.ndim < 1 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be a numeric array of examples, got dtype {array.dtype}")
    array = array.reshape(len(array), -1).astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values; drop or impute them first")
    return array


def _subsample(x: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= limit else x[np.sort(rng.choice(len(x), limit, replace=False))]


def _standardize(x: np.ndarray) -> np.ndarray:
    spread = x.std(axis=0)
    keep = spread > 0
    return (x[:, keep] - x[:, keep].mean(axis=0)) / spread[keep]


__all__ = [
    "ShiftResult",
    "benjamini_hochberg",
    "classifier_test",
    "holm",
    "ks_pvalue",
    "ks_statistic",
    "ks_test",
    "label_test",
    "mmd_test",
    "shift_test",
]
