"""Distribution shift: each test against its reference, then false alarms and power over 100 trials."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from scipy import stats
from threadpoolctl import threadpool_limits

from ember.data import load_dataset
from ember.evaluate.shift import (
    benjamini_hochberg,
    holm,
    ks_pvalue,
    ks_statistic,
    ks_test,
    label_test,
    mmd_test,
    shift_test,
)


@pytest.fixture(autouse=True)
def _one_blas_thread() -> Iterator[None]:
    # many tiny matrix products: one BLAS thread is several times faster on a busy 2-core machine
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    bundle = load_dataset("digits")
    return bundle.train.x.numpy().reshape(len(bundle.train), -1), bundle.train.y.numpy()


def test_ks_statistic_and_pvalues_match_scipy() -> None:
    rng = np.random.default_rng(0)
    a = np.round(rng.normal(size=(300, 4)) * 2) / 2  # ties, as in pixel data
    b = np.round(rng.normal(0.3, 1, size=(150, 4)) * 2) / 2
    d = ks_statistic(a, b)
    for f in range(4):
        ref = stats.ks_2samp(a[:, f], b[:, f], method="exact")
        assert d[f] == pytest.approx(ref.statistic, abs=1e-12)
    # the small-sample path is scipy's exact test; the large-sample law is close to it, and never
    # below it where decisions are made (p < 0.1)
    result = ks_test(a, b, correction="holm")
    raw = [stats.ks_2samp(a[:, f], b[:, f], method="exact").pvalue for f in range(4)]
    assert result["p_value"] == pytest.approx(min(1.0, 4 * min(raw)))
    for n, m in [(300, 150), (1000, 200), (100, 100)]:
        for shift in (0.1, 0.2, 0.3, 0.4):
            x, y = rng.normal(size=n), rng.normal(shift, 1, size=m)
            exact = stats.ks_2samp(x, y, method="exact").pvalue
            approx = ks_pvalue(ks_statistic(x[:, None], y[:, None]), n, m)[0]
            assert abs(approx - exact) < 0.02
            if exact < 0.1:
                assert exact <= approx <= 2.5 * exact


def test_multiple_testing_corrections() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5])
    assert benjamini_hochberg(p) == pytest.approx(stats.false_discovery_control(p, method="bh"))
    # Holm by hand: sorted 0.005, 0.01, 0.03, 0.04, 0.5 times 5, 4, 3, 2, 1, then running max
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.025, 0.5])


def test_constant_features_are_not_tests_and_labels_use_chi_square() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(80, 3)), rng.normal(size=(60, 3))
    a[:, 1] = b[:, 1] = 7.0
    assert ks_test(a, b)["features_tested"] == 2
    y_ref, y_cur = rng.integers(0, 3, 200), rng.integers(0, 3, 100)
    table = [[int((y == c).sum()) for c in range(3)] for y in (y_ref, y_cur)]
    assert label_test(y_ref, y_cur)["p_value"] == pytest.approx(
        stats.chi2_contingency(table, correction=False)[1]
    )


def test_mmd_permutation_pvalue_is_calibrated_and_sensitive() -> None:
    rng = np.random.default_rng(2)
    same = [
        mmd_test(rng.normal(size=(40, 2)), rng.normal(size=(30, 2)), permutations=99, seed=s)["p_value"]
        for s in range(40)
    ]
    assert 0.3 < float(np.mean(same)) < 0.7  # uniform under the null: mean near 1/2
    moved = mmd_test(
        rng.normal(size=(60, 2)), rng.normal(size=(60, 2)) * 2.0, permutations=99
    )  # same mean, wider
    assert moved["p_value"] <= 0.02


def test_result_shape_and_errors() -> None:
    rng = np.random.default_rng(3)
    result = shift_test(rng.normal(size=(50, 3)), rng.normal(size=(40, 3)), permutations=50)
    assert set(result.tests) == {"ks", "mmd", "classifier"} and not result.shifted
    assert result.to_dict()["n_current"] == 40
    with pytest.raises(ValueError, match="same features"):
        shift_test(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="needs y_reference"):
        shift_test(np.zeros((5, 3)), np.zeros((5, 3)), method="labels")
    with pytest.raises(ValueError, match="unknown shift method"):
        shift_test(np.zeros((5, 3)), np.zeros((5, 3)), method="t-test")  # type: ignore[arg-type]


N_REF, N_CUR, TRIALS = 200, 100, 100


def _trial(x: np.ndarray, y: np.ndarray, seed: int, planted: str) -> bool:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    ref, rest = order[:N_REF], order[N_REF:]
    if planted == "prior":  # classes 0-4 six times as likely as 5-9: 86% of the current set, not 50%
        weight = np.where(y[rest] < 5, 6.0, 1.0)
        cur = rng.choice(rest, N_CUR, replace=False, p=weight / weight.sum())
    else:
        cur = rest[:N_CUR]
    x_cur = np.clip(x[cur] * 0.9, 0, 1) if planted == "brightness" else x[cur]  # strokes 10% darker
    labels = {} if planted == "brightness" else {"y_reference": y[ref], "y_current": y[cur]}
    return shift_test(x[ref], x_cur, alpha=0.05, permutations=100, seed=seed, **labels).shifted


@pytest.mark.slow
def test_shift_false_alarms_and_detection_over_100_trials(digits: tuple[np.ndarray, np.ndarray]) -> None:
    """100 same-distribution trials at alpha 0.05 (all four tests, Bonferroni): at most 8 alarms;
    100 with strokes 10% darker (inputs only) and 100 with a class-prior change (with labels):
    at least 95 detections each. Digits: 200 reference vs 100 current examples per trial."""
    x, y = digits
    alarms = sum(_trial(x, y, seed, "none") for seed in range(TRIALS))
    brightness = sum(_trial(x, y, 1000 + seed, "brightness") for seed in range(TRIALS))
    prior = sum(_trial(x, y, 2000 + seed, "prior") for seed in range(TRIALS))
    print(f"false alarms {alarms}/100, brightness detected {brightness}/100, prior detected {prior}/100")
    assert alarms <= 8
    assert brightness >= 95
    assert prior >= 95
