"""Drift statistics against reference implementations, and the sliding-window monitor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from ember.deploy.profile import build_profile
from ember.deploy.serve.monitor import (
    DriftMonitor,
    Reference,
    Thresholds,
    ks_2samp_statistic,
    ks_pvalue,
    mmd2,
    mmd_test,
    psi,
    rbf_bandwidth,
    reference_from_profile,
)


def test_psi_matches_its_formula_and_is_zero_for_equal_histograms() -> None:
    ref, live = np.array([0.2, 0.3, 0.5]), np.array([30.0, 30.0, 40.0])
    p = live / live.sum()
    assert psi(ref, live) == pytest.approx(np.sum((p - ref) * np.log(p / ref)))
    assert psi(ref, ref * 7) == pytest.approx(0.0, abs=1e-12)
    assert np.isfinite(psi(ref, np.array([0.0, 0.0, 1.0])))  # an empty bin is floored, not infinite


def test_ks_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=400), rng.normal(0.3, 1.0, size=300)
    want = stats.ks_2samp(a, b, method="asymp")
    d = ks_2samp_statistic(a, b)
    assert d == pytest.approx(want.statistic)
    assert ks_pvalue(d, len(a), len(b)) == pytest.approx(want.pvalue, rel=0.05)
    ties = rng.integers(0, 3, size=200).astype(float)  # point masses
    assert ks_2samp_statistic(ties, ties[::-1]) == 0.0


def test_mmd_matches_the_plain_double_sum() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(12, 3)), rng.normal(0.5, 1.0, size=(9, 3))
    sigma = rbf_bandwidth(x, y)

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.exp(-np.sum((a - b) ** 2) / (2 * sigma**2)))

    xx = sum(k(x[i], x[j]) for i in range(12) for j in range(12) if i != j) / (12 * 11)
    yy = sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    xy = sum(k(a, b) for a in x for b in y) / (12 * 9)
    assert mmd2(x, y) == pytest.approx(xx + yy - 2 * xy)
    assert mmd_test(x, y, permutations=50)[0] == pytest.approx(xx + yy - 2 * xy)


def test_mmd_permutation_test_separates_same_from_shifted() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(150, 4))
    _, p_same = mmd_test(rng.normal(size=(150, 4)), ref)
    _, p_shift = mmd_test(rng.normal(0.7, 1.0, size=(150, 4)), ref)
    assert p_same > 0.05 and p_shift < 0.01


def _reference(rng: np.random.Generator) -> Reference:
    feats = rng.normal(size=(2000, 3))
    preds = rng.integers(0, 4, size=2000)
    return Reference.from_samples(feats, embeddings=feats, predictions=preds, num_classes=4)


def test_monitor_is_quiet_on_reference_traffic_and_alerts_on_drift() -> None:
    rng = np.random.default_rng(3)
    ref = _reference(rng)
    mon = DriftMonitor(ref, window=600, features=lambda x: x)
    for _ in range(6):
        x = torch.from_numpy(rng.normal(size=(100, 3)))
        mon.observe(x, x, torch.from_numpy(rng.integers(0, 4, size=100)))
    quiet = mon.report()
    assert quiet.window == 600 and quiet.alerts == [] and quiet.drift_score < 0.1
    assert len(quiet.feature_psi) == 3 and quiet.embedding_mmd_pvalue is not None

    for _ in range(6):  # the window slides: only shifted traffic remains, and one class dominates
        x = torch.from_numpy(rng.normal(1.0, 1.0, size=(100, 3)))
        mon.observe(x, x, torch.zeros(100, dtype=torch.long))
    drifted = mon.report(force=True)
    assert drifted.drift_score > 0.25 and drifted.prediction_psi is not None and drifted.prediction_psi > 0.25
    text = " | ".join(drifted.alerts)
    assert (
        "input drift: PSI" in text
        and "KS" in text
        and "embedding drift" in text
        and "prediction drift" in text
    )
    assert drifted.prediction_hist is not None and drifted.prediction_hist[0] == 1.0


def test_window_wraps_and_alerts_wait_for_min_window() -> None:
    rng = np.random.default_rng(4)
    mon = DriftMonitor(_reference(rng), window=50, features=lambda x: x, thresholds=Thresholds(min_window=40))
    mon.observe(torch.full((30, 3), 5.0))
    assert mon.report().window == 30 and mon.report().alerts == []  # drifted, but too few examples
    mon.observe(torch.from_numpy(rng.normal(size=(45, 3))))  # wraps: 5 old rows remain
    report = mon.report(force=True)
    assert report.window == 50
    mon.observe(torch.from_numpy(rng.normal(size=(200, 3))))  # a batch larger than the window
    assert max(mon.report(force=True).feature_psi) < 0.3


def test_reference_from_a_bundle_profile() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    x = torch.rand(300, 1, 8, 8)
    profile = build_profile(model, x, task="classification")
    ref = reference_from_profile(profile)
    assert ref.feature_names == profile.feature_names and ref.embedding_kind == "outputs"
    assert ref.class_probs is not None and ref.class_probs.sum() == pytest.approx(1.0, abs=1e-6)
    mon = DriftMonitor(ref, window=300, features=profile.features)
    mon.observe(x, model(x).detach(), model(x).argmax(1))
    report = mon.report()
    # the training inputs themselves: PSI agrees with the profile's own computation, and is small
    want = profile.psi(profile.features(x)).numpy()
    np.testing.assert_allclose(report.feature_psi, want, rtol=1e-4, atol=1e-6)
    assert report.drift_score < 0.05 and report.alerts == []
