"""Baselines: what a model must beat, fitted on a run's training split and scored on the evaluated split.

The tasks pick theirs (``baselines`` in `ember.tasks.contract`); these are the pieces they use.

- :func:`majority_class` / :func:`mean_value`: the trivial predictor (the most frequent training class,
  with the training class frequencies as its probabilities; the training mean).
- :func:`logistic_regression` / :func:`gradient_boosting`: a strong classical model from scikit-learn on
  flattened inputs; images larger than ``max_features`` values are average-pooled first, and at most
  ``max_train`` training examples (a seeded random subset) are used. Each baseline's ``description``
  says exactly what it saw.
- :func:`table_baselines`: the same two on a table's encoded rows, categories one-hot (logistic) or
  native (boosting), on up to 100,000 training rows.
- :func:`ngram_nll`: unigram / bigram language models with add-alpha smoothing, for language models.

A baseline's ``outputs`` have the model's form: ``(N, K)`` log-probabilities for classification (so
softmax gives back its probabilities and every classification metric applies), ``(N,)`` or ``(N, D)``
predictions for regression.

Example:
    >>> import torch
    >>> base = majority_class(torch.tensor([0, 1, 1, 2]), 3, num_classes=3)
    >>> base.outputs.softmax(dim=1)[0].tolist()
    [0.25, 0.5, 0.25]
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ember.data import ArrayData


@dataclass
class Baseline:
    """A baseline's name, what exactly it is, and its outputs on the evaluated split."""

    name: str
    description: str
    outputs: torch.Tensor


def as_arrays(data: Any, *, limit: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` tensors of a split (ArrayData, ``(x, y)`` tensors or any ``(x, y)`` Dataset).

    With ``limit``, at most that many examples, a seeded random subset (in their original order).
    """
    if isinstance(data, tuple):
        data = ArrayData(*data)
    n = len(data)
    index = None
    if limit is not None and n > limit:
        index = np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
    if isinstance(data, ArrayData):
        return (data.x, data.y) if index is None else (data.x[index], data.y[index])
    items = [data[int(i)] for i in (index if index is not None else range(n))]
    return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.stack(
        [torch.as_tensor(y) for _, y in items]
    )


def features(x: torch.Tensor, *, max_features: int = 256) -> tuple[np.ndarray, str]:
    """Inputs as a float64 ``(N, F)`` matrix for scikit-learn, and a phrase saying how it was made.

    ``(N, C, H, W)`` images with more than ``max_features`` values are average-pooled to the largest
    square grid that fits; anything else is flattened.
    """
    x = x.detach().float().cpu()
    if x.ndim == 4 and x[0].numel() > max_features:
        c, h, w = x.shape[1:]
        side = max(1, math.isqrt(max_features // c))
        x = F.adaptive_avg_pool2d(x, (min(side, h), min(side, w)))
        how = f"{c}x{x.shape[2]}x{x.shape[3]} average-pooled pixels"
    elif x.ndim > 2:
        how = f"{x[0].numel()} flattened values"
    else:
        how = f"{x.shape[1] if x.ndim == 2 else 1} features"
    return x.reshape(len(x), -1).double().numpy(), how


def majority_class(train_y: torch.Tensor, n: int, *, num_classes: int) -> Baseline:
    """Always the most frequent training class; its probabilities are the training class frequencies."""
    y = train_y.argmax(dim=1) if train_y.ndim == 2 else train_y.long()
    freq = torch.bincount(y.cpu(), minlength=num_classes).double()
    probs = (freq / freq.sum()).float()
    top = int(probs.argmax())
    return Baseline(
        "majority",
        f"always class {top} (the most frequent in training, {probs[top]:.1%}); training class frequencies as probabilities",
        probs.clamp_min(1e-12).log().expand(n, num_classes).clone(),
    )


def mean_value(train_y: torch.Tensor, n: int) -> Baseline:
    """Always the training mean (per output)."""
    mean = train_y.detach().double().mean(dim=0).float()
    return Baseline("mean", "always the training mean", mean.expand(n, *mean.shape).clone())


def logistic_regression(
    train: Any,
    evaluated: Any,
    *,
    num_classes: int,
    max_train: int = 5000,
    max_features: int = 256,
    seed: int = 0,
) -> Baseline:
    """Multinomial logistic regression (L2, C=1) on standardized flattened or pooled inputs."""
    from sklearn.linear_model import LogisticRegression

    return _sklearn_classifier(
        "logistic regression",
        LogisticRegression(max_iter=500),
        train, evaluated, num_classes=num_classes, max_train=max_train, max_features=max_features, seed=seed,
    )  # fmt: skip


def gradient_boosting(
    train: Any,
    evaluated: Any,
    *,
    num_classes: int | None = None,
    max_train: int = 5000,
    max_features: int = 256,
    seed: int = 0,
) -> Baseline:
    """Histogram gradient boosting (100 rounds): a classifier when ``num_classes`` is given, else a
    regressor (one per output for ``(N, D)`` targets)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    if num_classes is not None:
        return _sklearn_classifier(
            "gradient boosting",
            HistGradientBoostingClassifier(max_iter=100, random_state=seed),
            train, evaluated, num_classes=num_classes, max_train=max_train, max_features=max_features, seed=seed,
        )  # fmt: skip
    x, y = as_arrays(train, limit=max_train, seed=seed)
    fx, how = features(x, max_features=max_features)
    ex, _ = features(as_arrays(evaluated)[0], max_features=max_features)
    targets = y.double().numpy().reshape(len(y), -1)
    columns = []
    for j in range(targets.shape[1]):
        model = HistGradientBoostingRegressor(max_iter=100, random_state=seed)
        columns.append(model.fit(fx, targets[:, j]).predict(ex))
    pred = torch.from_numpy(np.stack(columns, axis=1)).float()
    pred = pred.reshape(len(ex), *y.shape[1:]) if y.ndim > 1 else pred[:, 0]
    return Baseline(
        "gradient boosting", f"histogram gradient boosting on {how}, {len(y)} training examples", pred
    )


def _sklearn_classifier(
    name: str,
    model: Any,
    train: Any,
    evaluated: Any,
    *,
    num_classes: int,
    max_train: int,
    max_features: int,
    seed: int,
) -> Baseline:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = as_arrays(train, limit=max_train, seed=seed)
    y = y.argmax(dim=1) if y.ndim == 2 else y
    fx, how = features(x, max_features=max_features)
    ex, _ = features(as_arrays(evaluated)[0], max_features=max_features)
    pipe = make_pipeline(StandardScaler(), model)
    note = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        pipe.fit(fx, y.numpy())
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        note = " (stopped at its iteration limit before converging)"
    probs = np.full((len(ex), num_classes), 0.0)
    probs[:, pipe.classes_] = pipe.predict_proba(ex)  # classes never seen in training keep probability 0
    logp = torch.from_numpy(np.log(np.clip(probs, 1e-12, None))).float()
    return Baseline(name, f"scikit-learn {name} on {how}, {len(y)} training examples{note}", logp)


def table_baselines(
    train: Any,
    evaluated: Any,
    encoder: Any,
    *,
    num_classes: int | None,
    max_train: int = 100_000,
    seed: int = 0,
) -> list[Baseline]:
    """Logistic regression and gradient boosting on encoded table rows, each as tables are best fed to it.

    Logistic regression gets standardized numbers, the missing indicators and one-hot categories;
    histogram gradient boosting the numbers as they are and the category codes as native categories
    (columns of more than 255 codes as numbers). ``encoder`` is the run's
    `~ember.data.tabular.RowEncoder`; ``num_classes`` None means regression (gradient boosting only).
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    x, y = as_arrays(train, limit=max_train, seed=seed)
    fx, ex = x.double().numpy(), as_arrays(evaluated)[0].double().numpy()
    layout = encoder.model_inputs()
    dense = layout["num_numeric"] + layout["num_binary"]
    codes = list(range(dense, fx.shape[1]))
    native = [dense + j for j, card in enumerate(layout["cardinalities"]) if card <= 255]
    what = f"{len(encoder.numeric)} numeric and {len(codes)} categorical columns, {len(y)} training rows"
    boosting: Any = (
        HistGradientBoostingClassifier(max_iter=100, categorical_features=native or None, random_state=seed)
        if num_classes is not None
        else HistGradientBoostingRegressor(
            max_iter=100, categorical_features=native or None, random_state=seed
        )
    )
    if num_classes is None:
        pred = torch.from_numpy(boosting.fit(fx, y.double().numpy()).predict(ex)).float()
        return [Baseline("gradient boosting", f"histogram gradient boosting on {what}", pred)]
    columns = ColumnTransformer(
        [
            ("numbers", StandardScaler(), list(range(dense))),
            ("categories", OneHotEncoder(handle_unknown="ignore"), codes),
        ]
    )
    logistic = make_pipeline(columns, LogisticRegression(max_iter=1000))
    out = []
    for name, model, how in (
        ("logistic regression", logistic, "standardized numbers, one-hot categories"),
        ("gradient boosting", boosting, "native categories"),
    ):
        model.fit(fx, y.numpy())
        probs = np.zeros((len(ex), num_classes))
        probs[:, model.classes_] = model.predict_proba(ex)
        logp = torch.from_numpy(np.log(np.clip(probs, 1e-12, None))).float()
        out.append(Baseline(name, f"scikit-learn {name} ({how}) on {what}", logp))
    return out


def ngram_nll(
    train_tokens: torch.Tensor | np.ndarray,
    eval_tokens: torch.Tensor | np.ndarray,
    *,
    vocab_size: int,
    order: int = 2,
    alpha: float = 1.0,
) -> np.ndarray:
    """Per-token negative log-likelihood (nats) of ``eval_tokens`` under an add-``alpha`` n-gram model.

    ``order=1``: ``P(w) = (c(w) + alpha) / (N + alpha V)``. ``order=2``:
    ``P(w | v) = (c(v w) + alpha) / (c(v .) + alpha V)``, the first token scored by the unigram model.
    ``exp(mean)`` of the result is the baseline's perplexity; its per-token form lets the bootstrap
    give it an interval.

    Example:
        >>> nll = ngram_nll([0, 1, 0, 1], [0, 1], vocab_size=2, order=1)
        >>> float(np.exp(nll.mean()))
        2.0
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 (unigram) or 2 (bigram), got {order}")
    train = np.asarray(train_tokens, dtype=np.int64).ravel()
    ev = np.asarray(eval_tokens, dtype=np.int64).ravel()
    v = vocab_size
    unigram = (np.bincount(train, minlength=v) + alpha) / (len(train) + alpha * v)
    nll = -np.log(unigram[ev])
    if order == 2 and len(ev) > 1:
        pairs = train[:-1] * v + train[1:]
        codes, counts = np.unique(pairs, return_counts=True)
        context = np.bincount(train[:-1], minlength=v)
        wanted = ev[:-1] * v + ev[1:]
        at = np.clip(np.searchsorted(codes, wanted), 0, max(len(codes) - 1, 0))
        seen = np.where(codes[at] == wanted, counts[at], 0) if len(codes) else np.zeros(len(wanted))
        nll[1:] = -np.log((seen + alpha) / (context[ev[:-1]] + alpha * v))
    return nll


__all__ = [
    "Baseline",
    "as_arrays",
    "features",
    "gradient_boosting",
    "logistic_regression",
    "majority_class",
    "mean_value",
    "ngram_nll",
    "table_baselines",
]
