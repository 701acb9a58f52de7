"""Baselines against scikit-learn fitted directly, and n-gram models against hand counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ember.data import ArrayData
from ember.metrics import baselines as B


def _blobs(seed: int, n: int, k: int = 3, d: int = 6) -> ArrayData:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    centers = torch.randn(k, d, generator=torch.Generator().manual_seed(99)) * 2
    return ArrayData(centers[y] + torch.randn(n, d, generator=g), y)


def test_majority_class_is_sklearns_prior_dummy() -> None:
    train, test = _blobs(0, 100), _blobs(1, 40)
    base = B.majority_class(train.y, len(test), num_classes=3)
    dummy = DummyClassifier(strategy="prior").fit(train.x.numpy(), train.y.numpy())
    np.testing.assert_allclose(
        base.outputs.softmax(1).numpy(), dummy.predict_proba(test.x.numpy()), atol=1e-6
    )
    assert (base.outputs.argmax(1).numpy() == dummy.predict(test.x.numpy())).all()
    assert "most frequent" in base.description


def test_mean_value_is_sklearns_mean_dummy() -> None:
    y = torch.tensor([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0]])
    base = B.mean_value(y, 5)
    ref = DummyRegressor().fit(np.zeros((3, 1)), y.numpy()).predict(np.zeros((5, 1)))
    np.testing.assert_allclose(base.outputs.numpy(), ref, rtol=1e-6)


def test_logistic_regression_equals_the_sklearn_pipeline() -> None:
    train, test = _blobs(2, 150), _blobs(3, 50)
    base = B.logistic_regression(train, test, num_classes=3)
    ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(
        train.x.double().numpy(), train.y.numpy()
    )
    np.testing.assert_allclose(
        base.outputs.exp().numpy(), ref.predict_proba(test.x.double().numpy()), atol=1e-5
    )
    assert "6 features, 150 training examples" in base.description
    assert (base.outputs.argmax(1) == test.y).float().mean() > 0.8


def test_classes_unseen_in_training_get_no_probability() -> None:
    train = _blobs(4, 60)
    train.y[:] = torch.where(train.y == 2, 0, train.y)  # class 2 never seen
    base = B.logistic_regression(train, _blobs(5, 10), num_classes=4)
    probs = base.outputs.softmax(1)
    assert probs.shape == (10, 4) and float(probs[:, 2:].max()) < 1e-9
    assert torch.allclose(probs.sum(1), torch.ones(10))


def test_images_are_pooled_and_the_description_says_so() -> None:
    x = torch.rand(4, 1, 28, 28)
    flat, how = B.features(x, max_features=256)
    pooled = F.adaptive_avg_pool2d(x, (16, 16)).reshape(4, -1).double().numpy()
    np.testing.assert_allclose(flat, pooled, rtol=1e-6)
    assert how == "1x16x16 average-pooled pixels"
    small, how = B.features(torch.rand(4, 1, 8, 8))
    assert small.shape == (4, 64) and how == "64 flattened values"


def test_training_subset_is_seeded_and_limited() -> None:
    data = _blobs(6, 300)
    x1, y1 = B.as_arrays(data, limit=50, seed=1)
    x2, _ = B.as_arrays(data, limit=50, seed=1)
    assert len(y1) == 50 and torch.equal(x1, x2)
    assert not torch.equal(x1, B.as_arrays(data, limit=50, seed=2)[0])
    plain = torch.utils.data.TensorDataset(data.x, data.y)  # any (x, y) Dataset
    assert torch.equal(B.as_arrays(plain)[1], data.y)


def test_gradient_boosting_regressor_equals_sklearn() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 3, generator=g)
    y = x[:, 0] * 2 - x[:, 1] ** 2 + 0.1 * torch.randn(120, generator=g)
    train, test = ArrayData(x[:90], y[:90]), ArrayData(x[90:], y[90:])
    base = B.gradient_boosting(train, test)
    ref = HistGradientBoostingRegressor(max_iter=100, random_state=0).fit(
        x[:90].double().numpy(), y[:90].numpy()
    )
    np.testing.assert_allclose(
        base.outputs.numpy(), ref.predict(x[90:].double().numpy()), rtol=1e-5, atol=1e-6
    )
    assert base.outputs.shape == (30,)


def test_ngram_models_against_hand_counts() -> None:
    train = [0, 1, 2, 0, 1, 0]  # counts: 0 x3, 1 x2, 2 x1; bigrams 0->1 x2, 1->2, 2->0, 1->0
    ev = [0, 1, 0, 2]
    uni = B.ngram_nll(train, ev, vocab_size=3, order=1, alpha=1.0)
    p = {0: 4 / 9, 1: 3 / 9, 2: 2 / 9}  # (count + 1) / (6 + 3)
    np.testing.assert_allclose(uni, [-math.log(p[t]) for t in ev])
    bi = B.ngram_nll(train, ev, vocab_size=3, order=2, alpha=1.0)
    # contexts: 0 -> 2 continuations (both 1), 1 -> 2 (2 and 0), 2 -> 1 (0)
    expected = [
        -math.log(4 / 9),
        -math.log((2 + 1) / (2 + 3)),
        -math.log((1 + 1) / (2 + 3)),
        -math.log((0 + 1) / (2 + 3)),
    ]
    np.testing.assert_allclose(bi, expected)
    assert np.exp(B.ngram_nll(train, train, vocab_size=3, order=2).mean()) < np.exp(
        B.ngram_nll(train, train, vocab_size=3, order=1).mean()
    )
    with pytest.raises(ValueError, match="order"):
        B.ngram_nll(train, ev, vocab_size=3, order=3)
