"""The evaluation half of the task contract: kept evaluations, evidence, baselines, report items, checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ember import tasks
from ember.data import ArrayData
from ember.data.text import LMLoader, TokenChunks
from ember.metrics.statistics import classification_statistics
from ember.tasks import contract, items
from ember.tasks.spec import InputSpec, ModelSpec, NotApplicable


def _blobs(seed: int, n: int, k: int = 3, d: int = 6) -> ArrayData:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    centers = torch.randn(k, d, generator=torch.Generator().manual_seed(99)) * 2
    return ArrayData(centers[y] + torch.randn(n, d, generator=g), y)


def _evaluated(task: Any, outputs: torch.Tensor, target: torch.Tensor, *, keep: bool = True) -> Any:
    ev = contract.evaluation(task, keep=keep)
    for out, y in zip(outputs.split(16), target.split(16)):
        ev.update(out, y, task.loss(out, y))
    return ev


def test_classification_evidence_baselines_and_items() -> None:
    train, test = _blobs(0, 120), _blobs(1, 40)
    task = tasks.create("classification")
    logits = torch.randn(40, 3) + 3 * torch.nn.functional.one_hot(test.y, 3)
    ev = _evaluated(task, logits, test.y)
    spec = ModelSpec(task="classification", inputs=InputSpec("table", (6,)), classes=["a", "b", "c"])
    evidence = contract.evidence(task, ev, test)
    assert (evidence.n, evidence.unit) == (40, "examples") and evidence.correct.dtype == bool
    assert evidence.statistics(np.ones((1, 40)))["accuracy"][0] == pytest.approx(ev.compute()["accuracy"])
    assert evidence.correct.sum() == (logits.argmax(1) == test.y).sum()
    majority, logistic = contract.baselines(task, train, test, ev, spec)
    assert [majority.name, logistic.name] == ["majority", "logistic regression"]
    reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    probs = reference.fit(train.x.double().numpy(), train.y.numpy()).predict_proba(test.x.double().numpy())
    expected = classification_statistics(probs, test.y.numpy())(np.ones((1, 40)))["accuracy"][0]
    assert logistic.statistics(np.ones((1, 40)))["accuracy"][0] == pytest.approx(expected)
    shown = contract.report_items(task, ev, test, spec)
    kinds = [type(i) for i in shown]
    assert kinds[:2] == [items.Confusion, items.Calibration] and items.Table in kinds
    assert shown[0].matrix.sum() == 40 and list(shown[0].classes) == ["a", "b", "c"]
    texts = contract.human_texts(task, ev, spec)
    assert len(texts) == 40 and texts[0]["reference"] in "abc" and "%" in texts[0]["output"]


def test_auroc_stands_aside_over_its_budget() -> None:
    task = tasks.create("classification")
    test = _blobs(2, 30)
    ev = _evaluated(task, torch.randn(30, 3), test.y)
    evidence = contract.evidence(task, ev, test, n_resamples=10**9)
    assert "auroc" not in evidence.statistics(np.ones((1, 30))) and 0 <= evidence.points["auroc"] <= 1
    assert "AUROC" in evidence.note


def test_regression_evidence_and_items() -> None:
    task = tasks.create("regression")
    x = torch.randn(50, 4)
    y = x[:, 0] * 2
    ev = _evaluated(task, y + 0.1 * torch.randn(50), y)
    spec = ModelSpec(task="regression", inputs=InputSpec("table", (4,)))
    evidence = contract.evidence(task, ev, ArrayData(x, y))
    assert evidence.statistics(np.ones((1, 50)))["mse"][0] == pytest.approx(ev.compute()["mse"], rel=1e-5)
    names = [b.name for b in contract.baselines(task, ArrayData(x, y), ArrayData(x, y), ev, spec)]
    assert names == ["mean", "gradient boosting"]
    scatter, table = contract.report_items(task, ev, ArrayData(x, y), spec)
    assert isinstance(scatter, items.Scatter) and scatter.heading == "Predicted against true"
    assert "input (first values)" in table.headers and len(table.rows) == 12


def test_language_model_units_are_the_loaders_chunks_or_the_kept_windows() -> None:
    task = tasks.create("language_model")
    g = torch.Generator().manual_seed(0)
    stream = torch.randint(4, 12, (400,), generator=g)
    loader = LMLoader(TokenChunks(stream, chunk_size=50), batch_size=4, block_size=8, shuffle=False)
    ev = contract.evaluation(task, keep=True)
    for x, y in loader:
        logits = torch.randn(*x.shape, 12, generator=g)
        ev.update(logits, y, task.loss(logits, y))
    evidence = contract.evidence(task, ev, loader)
    assert (evidence.n, evidence.unit) == (8, "blocks") and "block of 50 tokens" in evidence.note
    assert evidence.statistics(np.ones((1, 8)))["loss"][0] == pytest.approx(ev.compute()["loss"], rel=1e-6)
    spec = ModelSpec(task="language_model", inputs=InputSpec("tokens", (8,), "int64", vocab_size=12))
    unigram, bigram = contract.baselines(task, loader, loader, ev, spec)
    assert (unigram.name, bigram.name) == ("unigram", "bigram")
    # the same windows kept as arrays (a Python run): each window its own unit
    x = torch.stack([stream[i : i + 8] for i in range(0, 384, 8)])
    y = torch.stack([stream[i + 1 : i + 9] for i in range(0, 384, 8)])
    ev = _evaluated(task, torch.randn(len(x), 8, 12, generator=g), y)
    evidence = contract.evidence(task, ev, ArrayData(x, y))
    assert (evidence.n, evidence.unit) == (48, "windows")
    assert [b.name for b in contract.baselines(task, ArrayData(x, y), ArrayData(x, y), ev, spec)] == [
        "unigram",
        "bigram",
    ]
    (table,) = contract.report_items(task, ev, ArrayData(x, y), spec)
    assert "hardest" in table.note and len(table.rows) == 16  # 12 hardest, "...", 3 easiest
    with pytest.raises(ValueError, match="keep=True"):
        contract.evidence(task, _evaluated(task, torch.randn(2, 8, 12), y[:2], keep=False), ArrayData(x, y))


def test_checks_that_do_not_apply_say_why() -> None:
    assert contract.inapplicable_checks(tasks.create("classification")) == {}
    lm = contract.inapplicable_checks(tasks.create("language_model"))
    assert set(lm) == {"leakage", "shift", "imbalance"} and "next tokens" in lm["imbalance"]
    assert "class label" in contract.inapplicable_checks(tasks.create("regression"))["imbalance"]

    class Own:  # a user's task: only the loop's members
        headline, mode = "loss", "min"

        def evaluation(self) -> Any:
            return None

    assert set(contract.inapplicable_checks(Own())) == {"leakage", "shift", "imbalance"}
    assert contract.evidence(Own(), None, None) is None and contract.baselines(Own(), 0, 0, None, None) == []  # type: ignore[arg-type]
    assert contract.evaluation(Own(), keep=True) is None and contract.report_items(Own(), 0, 0, None) == []  # type: ignore[arg-type]
    with pytest.raises(NotApplicable, match="human rating does not apply to task 'Own'"):
        contract.human_texts(Own(), None, None)  # type: ignore[arg-type]
