"""Drift of live traffic against a bundle's reference profile, over a sliding window.

Three views of drift, each over the last ``window`` served examples:

- **inputs**: per-feature PSI (population stability index, on the reference's decile bins) and
  two-sample KS against the reference's feature sample, with asymptotic p-values
  (``scipy.stats.kstwo``); a feature alerts when ``p < alpha / num_features`` (Bonferroni).
- **embeddings**: squared MMD with an RBF kernel (median-heuristic bandwidth) between recent live
  embeddings and the reference sample, with a permutation p-value.
- **predictions**: PSI between the live predicted-class histogram and the reference one.

The server calls ``DriftMonitor.observe`` on a drift thread after each batch's answers are out
(features and a copy into ring buffers); ``report`` computes the statistics (cached for
``refresh_s``) for /metrics (:class:`DriftCollector`), /v1/drift and ``ember monitor``. ``drift_score`` is the largest PSI (features or predictions): the
usual reading is < 0.1 stable, 0.1-0.25 moderate, > 0.25 a significant shift.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> ref = Reference.from_samples(torch.randn(2000, 3, generator=g), num_classes=None)
    >>> mon = DriftMonitor(ref, window=500)
    >>> mon.observe(torch.randn(500, 3, generator=g) + 2.0)
    >>> report = mon.report()
    >>> report.drift_score > 0.25, len(report.alerts) > 0
    (True, True)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

EPS = 1e-4  # floor on bin proportions so PSI stays finite for empty bins


# --------------------------------------------------------------------------- statistics


def psi(reference: np.ndarray, live: np.ndarray, eps: float = EPS) -> float:
    """Population stability index between two histograms over the same bins.

    Args:
        reference: reference proportions or counts per bin.
        live: live proportions or counts per bin.
        eps: floor on each proportion (empty bins).

    Returns:
        ``sum((live - ref) * ln(live / ref))`` over bins, >= 0.
    """
    ref = np.maximum(np.asarray(reference, dtype=np.float64), 0)
    cur = np.maximum(np.asarray(live, dtype=np.float64), 0)
    ref = np.maximum(ref / max(ref.sum(), 1e-12), eps)
    cur = np.maximum(cur / max(cur.sum(), 1e-12), eps)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks_2samp_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance ``sup |F_a - F_b|`` of two 1-D samples."""
    a, b = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    if len(a) == 0 or len(b) == 0:
        return 0.0
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / len(a)
    cdf_b = np.searchsorted(b, points, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def ks_pvalue(statistic: float, n: int, m: int) -> float:
    """Asymptotic two-sided p-value of a two-sample KS distance (scipy's ``ks_2samp(method='asymp')``).

    Uses the one-sample distribution at the effective size ``n m / (n + m)``; exact for continuous
    data in the limit, conservative for features with ties.
    """
    from scipy.stats import kstwo

    if n == 0 or m == 0:
        return 1.0
    return float(np.clip(kstwo.sf(statistic, round(n * m / (n + m))), 0.0, 1.0))


def rbf_bandwidth(x: np.ndarray, y: np.ndarray) -> float:
    """Median heuristic: the median pairwise Euclidean distance of the pooled sample."""
    pooled = np.concatenate([x, y]).astype(np.float64)
    d2 = _sq_dists(pooled, pooled)
    upper = d2[np.triu_indices(len(pooled), k=1)]
    median = float(np.sqrt(np.median(upper))) if upper.size else 1.0
    return median if median > 0 else 1.0


def mmd2(x: np.ndarray, y: np.ndarray, sigma: float | None = None) -> float:
    """Unbiased squared MMD between samples ``x`` (n, D) and ``y`` (m, D), RBF kernel.

    ``k(a, b) = exp(-|a - b|^2 / (2 sigma^2))``; ``sigma`` defaults to :func:`rbf_bandwidth`.
    """
    sigma = rbf_bandwidth(x, y) if sigma is None else sigma
    k = _rbf(np.concatenate([x, y]).astype(np.float64), sigma)
    return _mmd2_from_kernel(k, len(x))


def mmd_test(x: np.ndarray, y: np.ndarray, *, permutations: int = 200, seed: int = 0) -> tuple[float, float]:
    """Squared MMD and its permutation p-value (the kernel matrix is computed once).

    Returns:
        ``(mmd2, p)`` with ``p = (1 + #{permuted >= observed}) / (1 + permutations)``.
    """
    sigma = rbf_bandwidth(x, y)
    k = _rbf(np.concatenate([x, y]).astype(np.float64), sigma)
    n, total = len(x), len(x) + len(y)
    rng = np.random.default_rng(seed)
    # Row 0: the observed split; then one row per permutation. a[i] = 1 where example i is "live".
    labels = np.zeros((permutations + 1, total))
    labels[0, :n] = 1.0
    for row in range(1, permutations + 1):
        labels[row, rng.permutation(total)[:n]] = 1.0
    stats = _mmd2_for_labels(k, labels, n)
    return float(stats[0]), float((1 + np.sum(stats[1:] >= stats[0])) / (permutations + 1))


def _mmd2_for_labels(k: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    # Block sums of K for many splits at once: a'Ka, a'K(1-a), (1-a)'K(1-a), minus the diagonals.
    m = k.shape[0] - n
    rows, diag, total = k.sum(1), np.diag(k), k.sum()
    s_xx = np.einsum("pi,pi->p", labels @ k, labels)
    a_r = labels @ rows
    s_xy = a_r - s_xx
    s_yy = total - 2.0 * a_r + s_xx
    t_x = labels @ diag
    t_y = diag.sum() - t_x
    return (s_xx - t_x) / (n * (n - 1)) + (s_yy - t_y) / (m * (m - 1)) - 2.0 * s_xy / (n * m)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d2, 0.0)


def _rbf(z: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-_sq_dists(z, z) / (2.0 * sigma * sigma))


def _mmd2_from_kernel(k: np.ndarray, n: int) -> float:
    labels = np.zeros((1, k.shape[0]))
    labels[0, :n] = 1.0
    return float(_mmd2_for_labels(k, labels, n)[0])


# --------------------------------------------------------------------------- reference


@dataclass
class Reference:
    """What live traffic is compared with: reference feature distributions, embeddings, classes.

    Build it from a bundle's profile (:func:`reference_from_profile`) or from reference-time
    samples (:meth:`from_samples`).
    """

    feature_names: list[str]
    """One name per input feature."""
    bin_edges: np.ndarray
    """(F, k) inner edges of the PSI bins per feature; bin i holds ``edges[i-1] < v <= edges[i]``."""
    bin_probs: np.ndarray
    """(F, k + 1) the reference proportion in each PSI bin."""
    feature_sample: np.ndarray
    """(N, F) reference feature rows, for KS."""
    embeddings: np.ndarray | None = None
    """(M, D) a sample of reference embeddings, or None."""
    class_probs: np.ndarray | None = None
    """(K,) reference predicted-class proportions, or None (not a classifier)."""
    embedding_kind: str = "pre_logits"
    """``pre_logits`` (the model's penultimate features) or ``outputs`` (models without the split)."""

    @classmethod
    def from_samples(
        cls,
        features: torch.Tensor | np.ndarray,
        *,
        embeddings: torch.Tensor | np.ndarray | None = None,
        predictions: torch.Tensor | np.ndarray | None = None,
        num_classes: int | None = None,
        feature_names: Sequence[str] | None = None,
        bins: int = 10,
        sample_size: int = 500,
        seed: int = 0,
    ) -> Reference:
        """Build a reference from reference-time features ``(N, F)``, embeddings and predictions."""
        feats = _np(features).reshape(len(features), -1).astype(np.float64)
        edges = np.quantile(feats, np.linspace(0.0, 1.0, bins + 1)[1:-1], axis=0).T  # (F, bins - 1)
        probs = np.stack([_bin_counts(feats[:, j], edges[j]) for j in range(feats.shape[1])]) / len(feats)
        rng = np.random.default_rng(seed)
        keep = rng.choice(len(feats), min(sample_size, len(feats)), replace=False)
        emb = None
        if embeddings is not None:
            emb = _np(embeddings)
            emb = emb[rng.choice(len(emb), min(sample_size, len(emb)), replace=False)]
        class_probs = None
        if predictions is not None and num_classes:
            counts = np.bincount(_np(predictions).astype(np.int64), minlength=num_classes)[:num_classes]
            class_probs = counts / max(counts.sum(), 1)
        names = list(feature_names) if feature_names is not None else [f"f{j}" for j in range(feats.shape[1])]
        return cls(names, edges, probs, feats[keep], emb, class_probs)


def reference_from_profile(profile: Any) -> Reference:
    """The :class:`Reference` held by a bundle's ``ember.deploy.profile.ReferenceProfile``."""
    hist = profile.prediction_histogram
    emb = np.asarray(profile.embedding_sample, dtype=np.float64) if profile.embedding_sample else None
    return Reference(
        feature_names=list(profile.feature_names),
        bin_edges=np.asarray(profile.bin_edges, dtype=np.float64),
        bin_probs=np.asarray(profile.bin_fractions, dtype=np.float64),
        feature_sample=np.asarray(profile.feature_sample, dtype=np.float64),
        embeddings=emb,
        class_probs=np.asarray(hist, dtype=np.float64) if hist else None,
        embedding_kind=str(getattr(profile, "embedding_kind", "pre_logits")),
    )


def _bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # bin i holds edges[i-1] < v <= edges[i] (torch.bucketize's convention, as in the profile)
    return np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1).astype(
        np.float64
    )


def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# --------------------------------------------------------------------------- the monitor


@dataclass(frozen=True)
class Thresholds:
    """When drift raises an alert."""

    psi: float = 0.25
    """Feature PSI above this alerts (0.25: the usual 'significant shift')."""
    ks_alpha: float = 0.01
    """A feature's KS p-value below ``ks_alpha / num_features`` alerts."""
    mmd_alpha: float = 0.01
    """An embedding MMD permutation p-value below this alerts."""
    prediction_psi: float = 0.25
    """Prediction-histogram PSI above this alerts."""
    min_window: int = 100
    """No alerts until the window holds this many examples."""


@dataclass
class DriftReport:
    """Drift statistics over the current window."""

    window: int
    feature_names: list[str]
    feature_psi: list[float] = field(default_factory=list)
    feature_ks: list[float] = field(default_factory=list)
    feature_ks_pvalue: list[float] = field(default_factory=list)
    embedding_mmd2: float | None = None
    embedding_mmd_pvalue: float | None = None
    prediction_hist: list[float] | None = None
    prediction_psi: float | None = None
    drift_score: float = 0.0
    alerts: list[str] = field(default_factory=list)
    computed_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (GET /v1/drift)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class DriftMonitor:
    """Sliding-window drift of live inputs, embeddings and predictions against a :class:`Reference`.

    Args:
        reference: the reference distributions.
        window: the number of most recent examples compared.
        features: per-example input features ``(B, ...) -> (B, F)``; the same function that built
            the reference (the bundle profile's ``features``). Default
            ``ember.deploy.profile.input_features`` (channel means + a 4x4 pooled grid; table columns).
        thresholds: alert thresholds.
        refresh_s: ``report`` recomputes at most this often (scrapes in between get the cache).
        mmd_sample: at most this many recent live embeddings enter the MMD test.
        permutations: permutations of the MMD test.
    """

    def __init__(
        self,
        reference: Reference,
        *,
        window: int = 1000,
        features: Callable[[torch.Tensor], torch.Tensor] | None = None,
        thresholds: Thresholds | None = None,
        refresh_s: float = 1.0,
        mmd_sample: int = 200,
        permutations: int = 200,
    ) -> None:
        self.reference = reference
        self.window = window
        if features is None:
            from ember.deploy.profile import input_features

            features = input_features
        self.features = features
        self.thresholds = thresholds or Thresholds()
        self.refresh_s = refresh_s
        self.mmd_sample = mmd_sample
        self.permutations = permutations
        self._lock = threading.Lock()
        self._buffers: dict[str, np.ndarray] = {}
        self._count = 0  # examples ever observed
        self._cached: DriftReport | None = None
        self._cached_count = -1

    def observe(
        self,
        x: torch.Tensor,
        embeddings: torch.Tensor | None = None,
        predictions: torch.Tensor | None = None,
    ) -> None:
        """Add one served batch: inputs ``(B, ...)``, embeddings ``(B, D)``, predicted classes ``(B,)``."""
        rows = {"features": _np(self.features(x)).reshape(len(x), -1)}
        if embeddings is not None and self.reference.embeddings is not None:
            rows["embeddings"] = _np(embeddings).reshape(len(x), -1)
        if predictions is not None and self.reference.class_probs is not None:
            rows["predictions"] = _np(predictions).astype(np.float32).reshape(len(x), 1)
        with self._lock:
            start = self._count
            for name, values in rows.items():
                self._write(name, values, start)
            self._count += len(x)

    def _write(self, name: str, values: np.ndarray, start: int) -> None:
        values = values[-self.window :]
        start += max(0, len(values) - self.window)
        buf = self._buffers.get(name)
        if buf is None:
            buf = self._buffers[name] = np.zeros((self.window, values.shape[1]), dtype=np.float32)
        idx = (start + np.arange(len(values))) % self.window
        buf[idx] = values

    def _snapshot(self) -> tuple[int, dict[str, np.ndarray]]:
        with self._lock:
            n = min(self._count, self.window)
            if self._count <= self.window:
                return n, {k: b[:n].copy() for k, b in self._buffers.items()}
            # oldest first: the slot after the newest write
            head = self._count % self.window
            return n, {k: np.roll(b, -head, axis=0).copy() for k, b in self._buffers.items()}

    def report(self, *, force: bool = False) -> DriftReport:
        """Drift statistics over the window (recomputed when stale, else the cached report)."""
        cached = self._cached
        now = time.monotonic()
        if (
            not force
            and cached is not None
            and (self._cached_count == self._count or now - cached.computed_at < self.refresh_s)
        ):
            return cached
        count = self._count
        report = self._compute()
        report.computed_at = time.monotonic()
        self._cached, self._cached_count = report, count
        return report

    def _compute(self) -> DriftReport:
        ref, th = self.reference, self.thresholds
        n, data = self._snapshot()
        report = DriftReport(window=n, feature_names=list(ref.feature_names))
        if n == 0:
            return report
        feats = data["features"].astype(np.float64)
        m = len(ref.feature_sample)
        for j in range(feats.shape[1]):
            report.feature_psi.append(psi(ref.bin_probs[j], _bin_counts(feats[:, j], ref.bin_edges[j])))
            stat = ks_2samp_statistic(feats[:, j], ref.feature_sample[:, j])
            report.feature_ks.append(stat)
            report.feature_ks_pvalue.append(ks_pvalue(stat, n, m))
        scores = list(report.feature_psi)
        if "embeddings" in data and ref.embeddings is not None and n >= 2:
            live = data["embeddings"][-self.mmd_sample :].astype(np.float64)
            stat, p = mmd_test(live, ref.embeddings.astype(np.float64), permutations=self.permutations)
            report.embedding_mmd2, report.embedding_mmd_pvalue = stat, p
        if "predictions" in data and ref.class_probs is not None:
            k = len(ref.class_probs)
            counts = np.bincount(data["predictions"][:, 0].astype(np.int64).clip(0, k - 1), minlength=k)
            report.prediction_hist = (counts / n).tolist()
            report.prediction_psi = psi(ref.class_probs, counts)
            scores.append(report.prediction_psi)
        report.drift_score = float(max(scores, default=0.0))
        if n >= th.min_window:
            report.alerts = self._alerts(report)
        return report

    def _alerts(self, r: DriftReport) -> list[str]:
        th, names, alerts = self.thresholds, r.feature_names, []
        hot = [j for j, v in enumerate(r.feature_psi) if v > th.psi]
        if hot:
            worst = max(hot, key=lambda j: r.feature_psi[j])
            alerts.append(
                f"input drift: PSI > {th.psi} on {len(hot)}/{len(names)} features "
                f"(worst {names[worst]}: {r.feature_psi[worst]:.3f})"
            )
        alpha = th.ks_alpha / max(len(names), 1)
        ks_hot = [j for j, p in enumerate(r.feature_ks_pvalue) if p < alpha]
        if ks_hot:
            worst = max(ks_hot, key=lambda j: r.feature_ks[j])
            alerts.append(
                f"input drift: KS p < {alpha:.2g} on {len(ks_hot)}/{len(names)} features "
                f"(worst {names[worst]}: D={r.feature_ks[worst]:.3f})"
            )
        if r.embedding_mmd_pvalue is not None and r.embedding_mmd_pvalue < th.mmd_alpha:
            alerts.append(
                f"embedding drift: MMD^2={r.embedding_mmd2:.4f}, permutation p={r.embedding_mmd_pvalue:.3g}"
            )
        if r.prediction_psi is not None and r.prediction_psi > th.prediction_psi:
            alerts.append(
                f"prediction drift: class-histogram PSI {r.prediction_psi:.3f} > {th.prediction_psi}"
            )
        return alerts


# --------------------------------------------------------------------------- Prometheus


class DriftCollector:
    """A Prometheus collector exporting a :class:`DriftMonitor`'s report at scrape time.

    Register it in a ``prometheus_client.CollectorRegistry``; each scrape reads ``monitor.report()``
    (cached for ``refresh_s``), so scrape off the event loop.
    """

    def __init__(self, monitor: DriftMonitor) -> None:
        self.monitor = monitor

    def describe(self) -> list[Any]:
        return []  # collected lazily; nothing to check at registration

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        r = self.monitor.report()

        def gauge(name: str, doc: str, value: float | None) -> Any:
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], float("nan") if value is None else value)
            return g

        yield gauge("ember_drift_score", "Largest PSI over input features and predictions", r.drift_score)
        yield gauge("ember_drift_window", "Examples in the drift window", r.window)
        yield gauge("ember_drift_alerts", "Drift alerts now raised", len(r.alerts))
        yield gauge("ember_drift_embedding_mmd2", "Squared MMD of embeddings vs reference", r.embedding_mmd2)
        yield gauge(
            "ember_drift_embedding_mmd_pvalue", "Permutation p-value of the MMD", r.embedding_mmd_pvalue
        )
        yield gauge("ember_drift_prediction_psi", "PSI of the predicted-class histogram", r.prediction_psi)
        for name, values, doc in (
            ("ember_drift_feature_psi", r.feature_psi, "PSI per input feature"),
            ("ember_drift_feature_ks", r.feature_ks, "KS statistic per input feature"),
            ("ember_drift_feature_ks_pvalue", r.feature_ks_pvalue, "KS p-value per input feature"),
        ):
            g = GaugeMetricFamily(name, doc, labels=["feature"])
            for feature, value in zip(r.feature_names, values):
                g.add_metric([feature], value)
            yield g
        if r.prediction_hist is not None:
            g = GaugeMetricFamily(
                "ember_drift_prediction_fraction", "Live predicted-class fractions", labels=["cls"]
            )
            for k, value in enumerate(r.prediction_hist):
                g.add_metric([str(k)], value)
            yield g
