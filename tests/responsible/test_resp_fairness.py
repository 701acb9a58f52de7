"""Fairness metrics against Fairlearn's MetricFrame and its gap functions on the same predictions."""

import numpy as np
import pytest

from ember.responsible import fairness

fairlearn = pytest.importorskip("fairlearn.metrics")


def _data(n=600, k=2, seed=0):
    rng = np.random.default_rng(seed)
    sex = rng.choice(["female", "male"], n, p=[0.35, 0.65])
    race = rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1])
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y] + (sex == "male")[:, None] * np.eye(k)[k - 1]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs.argmax(1), probs, sex, race


def test_binary_matches_metricframe_and_gaps():
    from sklearn.metrics import accuracy_score, recall_score

    y, pred, probs, sex, race = _data()
    reports = fairness.audit(y, pred, {"sex": sex, "race": race}, probs=probs, n_resamples=200)
    assert [r.attribute for r in reports] == ["sex", "race", "sex & race"]
    for report, column in zip(reports, [sex, race, [f"{s} & {r}" for s, r in zip(sex, race)]]):
        frame = fairlearn.MetricFrame(
            metrics={
                "accuracy": accuracy_score,
                "selection_rate": fairlearn.selection_rate,
                "tpr": recall_score,
                "fpr": fairlearn.false_positive_rate,
                "count": fairlearn.count,
            },
            y_true=y,
            y_pred=pred,
            sensitive_features=np.asarray(column),
        )
        for group in report.groups:
            row = frame.by_group.loc[group]
            assert report.counts[group] == row["count"]
            for metric in ("accuracy", "selection_rate", "tpr", "fpr"):
                assert report.by_group[group][metric].value == pytest.approx(row[metric], abs=1e-12)
        sf = np.asarray(column)
        expected = {
            "demographic_parity_difference": fairlearn.demographic_parity_difference(
                y, pred, sensitive_features=sf
            ),
            "demographic_parity_ratio": fairlearn.demographic_parity_ratio(y, pred, sensitive_features=sf),
            "equalized_odds_difference": fairlearn.equalized_odds_difference(y, pred, sensitive_features=sf),
            "equalized_odds_ratio": fairlearn.equalized_odds_ratio(y, pred, sensitive_features=sf),
        }
        for name, value in expected.items():
            ci = report.gaps[name]
            assert ci.value == pytest.approx(value, abs=1e-12)
            assert ci.low <= ci.value <= ci.high


def test_calibration_per_group_matches_torchmetrics():
    import torch

    from ember.metrics import calibration_error

    y, pred, probs, sex, _ = _data(k=3)
    report = fairness.audit(y, pred, {"sex": sex}, probs=probs, n_resamples=20)[0]
    for group in report.groups:
        keep = sex == group
        expected = calibration_error(torch.tensor(np.log(probs[keep])), torch.tensor(y[keep]))
        assert report.by_group[group]["ece"].value == pytest.approx(expected, abs=1e-5)


def test_multiclass_worst_class_gap():
    y, pred, _, sex, _ = _data(k=4)
    report = fairness.audit(y, pred, {"sex": sex}, n_resamples=20)[0]
    assert report.positive is None
    worst = max(
        abs(np.mean(pred[sex == "male"] == c) - np.mean(pred[sex == "female"] == c)) for c in range(4)
    )
    assert report.gaps["demographic_parity_difference"].value == pytest.approx(worst)
    assert "selection_rate/3" in report.by_group["male"]


def test_interval_narrows_with_more_examples_and_bad_lengths_fail():
    small = fairness.audit(*_data(200)[:2], {"sex": _data(200)[3]}, n_resamples=300)[0]
    large = fairness.audit(*_data(5000)[:2], {"sex": _data(5000)[3]}, n_resamples=300)[0]

    def width(r):
        return r.gaps["demographic_parity_difference"].high - r.gaps["demographic_parity_difference"].low

    assert width(large) < width(small) / 2
    with pytest.raises(ValueError, match="sensitive column 'sex' has 3 values"):
        fairness.audit([0, 1], [0, 1], {"sex": ["a", "b", "c"]})
