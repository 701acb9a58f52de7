"""Bootstrap intervals, the paired bootstrap and McNemar against scipy, scikit-learn and hand counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps
from sklearn import metrics as skm

from ember import metrics as M
from ember.evaluate import stats as S
from ember.metrics import statistics as MS


def test_bootstrap_interval_equals_scipy_percentile() -> None:
    x = np.random.default_rng(5).normal(size=120)
    ours = S.bootstrap_ci(lambda w: w @ x / len(x), len(x), n_resamples=2000, seed=3)
    ref = sps.bootstrap((x,), np.mean, n_resamples=2000, method="percentile", rng=np.random.default_rng(3),
                        vectorized=True)  # fmt: skip
    assert ours.value == pytest.approx(x.mean())
    assert (ours.low, ours.high) == pytest.approx(tuple(ref.confidence_interval), rel=1e-9)
    narrow = S.bootstrap_ci(lambda w: w @ x / len(x), len(x), n_resamples=2000, seed=3, confidence=0.5)
    assert ours.low < narrow.low < narrow.high < ours.high


def test_paired_bootstrap_equals_scipy_paired() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=80), rng.normal(0.3, 1, size=80)
    test = S.paired_bootstrap(
        lambda w: {"m": w @ a / 80}, lambda w: {"m": w @ b / 80}, 80, n_resamples=1500, seed=7
    )["m"]
    ref = sps.bootstrap((a, b), lambda u, v, axis: v.mean(axis) - u.mean(axis), paired=True, n_resamples=1500,
                        method="percentile", rng=np.random.default_rng(7), vectorized=True)  # fmt: skip
    assert test.difference.value == pytest.approx(b.mean() - a.mean())
    assert (test.difference.low, test.difference.high) == pytest.approx(
        tuple(ref.confidence_interval), rel=1e-9
    )
    assert test.a.value == pytest.approx(a.mean()) and test.b.value == pytest.approx(b.mean())
    same = S.paired_bootstrap(lambda w: {"m": w @ a / 80}, lambda w: {"m": w @ a / 80}, 80)["m"]
    assert same.p_value == 1.0 and not same.significant


def _classifier_case(seed: int, n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    logits = torch.randn(n, k, generator=g) * 2 + torch.nn.functional.one_hot(y, k) * 1.2
    return logits, y


@pytest.mark.parametrize("seed,n,k", [(0, 150, 2), (1, 200, 4), (2, 120, 8)])
def test_classification_statistics_point_values_equal_the_metrics(seed: int, n: int, k: int) -> None:
    logits, y = _classifier_case(seed, n, k)
    if seed == 1:
        logits[:5] = torch.tensor([50.0] + [0.0] * (k - 1))  # confidence exactly 1.0 in float32: the edge bin
        y[50:] = torch.where(y[50:] == k - 1, 0, y[50:])  # and a class missing from the targets
    probs = logits.double().softmax(1)
    stats = MS.classification_statistics(probs.numpy(), y.numpy(), top_k=3)
    point = {name: float(v[0]) for name, v in stats(np.ones((1, n))).items()}
    assert point["accuracy"] == pytest.approx(M.accuracy(logits, y), abs=1e-6)
    assert point["precision_macro"] == pytest.approx(M.precision(logits, y), abs=1e-6)
    assert point["recall_macro"] == pytest.approx(M.recall(logits, y), abs=1e-6)
    assert point["f1_macro"] == pytest.approx(M.f1(logits, y), abs=1e-6)
    assert point["auroc"] == pytest.approx(M.auroc(logits, y), abs=1e-5)
    assert point["ece"] == pytest.approx(M.calibration_error(logits.double(), y), abs=1e-5)
    if k > 3:
        assert point["top3_accuracy"] == pytest.approx(M.top_k_accuracy(logits, y, 3), abs=1e-6)
    else:
        assert "top3_accuracy" not in point


def test_classification_statistics_on_resamples_equal_sklearn_on_resampled_data() -> None:
    logits, y = _classifier_case(4, 90, 4)
    probs, t = logits.double().softmax(1).numpy(), y.numpy()
    stats = MS.classification_statistics(probs, t, top_k=2)
    idx = np.random.default_rng(0).integers(0, 90, (3, 90))
    values = stats(S.multiplicities(idx, 90))
    for row, i in enumerate(idx):
        p, tt, pr = probs[i], t[i], probs[i].argmax(1)
        assert values["accuracy"][row] == pytest.approx(skm.accuracy_score(tt, pr))
        assert values["f1_macro"][row] == pytest.approx(
            skm.f1_score(tt, pr, average="macro", zero_division=0)
        )
        assert values["precision_macro"][row] == pytest.approx(
            skm.precision_score(tt, pr, average="macro", zero_division=0)
        )
        assert values["recall_macro"][row] == pytest.approx(
            skm.recall_score(tt, pr, average="macro", zero_division=0)
        )
        assert values["top2_accuracy"][row] == pytest.approx(
            skm.top_k_accuracy_score(tt, p, k=2, labels=range(4))
        )
        auc = np.mean(
            [skm.roc_auc_score(tt == c, p[:, c]) for c in range(4) if 0 < (tt == c).sum() < len(tt)]
        )
        assert values["auroc"][row] == pytest.approx(auc)


def test_regression_statistics_match_sklearn() -> None:
    rng = np.random.default_rng(2)
    t = 50 + rng.normal(size=(70, 2)) * [1.0, 5.0]
    p = t + rng.normal(size=(70, 2))
    stats = MS.regression_statistics(p, t)
    point = {k: float(v[0]) for k, v in stats(np.ones((1, 70))).items()}
    assert point == pytest.approx(
        {"mse": skm.mean_squared_error(t, p), "mae": skm.mean_absolute_error(t, p), "r2": skm.r2_score(t, p)}
    )
    assert point["r2"] == pytest.approx(M.r2(torch.tensor(p), torch.tensor(t)))
    idx = np.random.default_rng(1).integers(0, 70, (2, 70))
    values = stats(S.multiplicities(idx, 70))
    for row, i in enumerate(idx):
        assert values["r2"][row] == pytest.approx(skm.r2_score(t[i], p[i]))
        assert values["mae"][row] == pytest.approx(skm.mean_absolute_error(t[i], p[i]))


def test_mcnemar_against_hand_counts_and_scipy() -> None:
    # the textbook table: 101 both right, 121 only A right, 59 only B right, 33 both wrong
    a = np.r_[np.ones(101), np.ones(121), np.zeros(59), np.zeros(33)].astype(bool)
    b = np.r_[np.ones(101), np.zeros(121), np.ones(59), np.zeros(33)].astype(bool)
    chi = S.mcnemar(a, b)
    assert (chi.b, chi.c, chi.exact) == (121, 59, False)
    assert chi.statistic == pytest.approx((abs(121 - 59) - 1) ** 2 / 180) == pytest.approx(20.672, abs=1e-3)
    assert chi.p_value == pytest.approx(sps.chi2.sf(chi.statistic, df=1))
    exact = S.mcnemar(a, b, exact=True)
    assert exact.p_value == pytest.approx(sps.binomtest(59, 180, 0.5).pvalue)
    few = S.mcnemar(np.array([1, 1, 1, 0, 1, 0], bool), np.array([0, 0, 1, 1, 1, 0], bool))
    assert (few.b, few.c, few.exact) == (2, 1, True)
    assert few.p_value == pytest.approx(sps.binomtest(1, 3, 0.5).pvalue) == pytest.approx(1.0)
    assert S.mcnemar(a, a).p_value == 1.0
    with pytest.raises(ValueError, match="one length"):
        S.mcnemar(a, b[:-1])


def test_intervals_cover_the_truth_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    trials, n, truth = 300, 150, 0.8
    covered = 0
    for i in range(trials):
        x = (rng.random(n) < truth).astype(float)
        ci = S.bootstrap_ci(lambda w, x=x: w @ x / n, n, n_resamples=400, seed=i)
        covered += ci.low <= truth <= ci.high
    assert 0.90 <= covered / trials <= 0.985, covered / trials


def test_paired_p_values_hold_their_level_and_find_real_differences() -> None:
    rng = np.random.default_rng(1)
    n, trials = 200, 150

    def p_value(rate_a: float, rate_b: float, seed: int) -> float:
        a = (rng.random(n) < rate_a).astype(float)
        b = (rng.random(n) < rate_b).astype(float)
        return S.paired_bootstrap(lambda w: {"acc": w @ a / n}, lambda w: {"acc": w @ b / n}, n, n_resamples=400,
                                  seed=seed)["acc"].p_value  # fmt: skip

    null = np.array([p_value(0.7, 0.7, i) for i in range(trials)])
    assert (null < 0.05).mean() <= 0.09  # a 5% test: false alarms near 5%
    real = np.array([p_value(0.6, 0.8, i) for i in range(20)])
    assert (real < 0.05).mean() >= 0.9


def test_chunked_resampling_is_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.arange(50.0)
    whole = S.bootstrap_ci(lambda w: w @ x / 50, 50, n_resamples=300, seed=1)
    monkeypatch.setattr(S, "MAX_CELLS", 50 * 7)  # 7 resamples a chunk
    chunked = S.bootstrap_ci(lambda w: w @ x / 50, 50, n_resamples=300, seed=1)
    assert chunked == S.bootstrap_ci(lambda w: w @ x / 50, 50, n_resamples=300, seed=1)
    assert (
        chunked.value == whole.value
        and abs(chunked.low - whole.low) < 3
        and abs(chunked.high - whole.high) < 3
    )


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one example"):
        S.bootstrap_ci(lambda w: w.sum(1), 0)
    with pytest.raises(ValueError, match="confidence"):
        S.bootstrap_ci(lambda w: w.sum(1), 3, confidence=95)
    assert math.isnan(S.bootstrap_ci(lambda w: np.full(len(w), np.nan), 3).low)
