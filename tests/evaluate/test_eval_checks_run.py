"""Findings: the overfitting callback in a real fit, each check's verdicts, and run_checks on a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ember
from ember.data import load_dataset
from ember.evaluate.checks import (
    Finding,
    check_imbalance,
    check_leakage,
    check_overfitting,
    run_checks,
)
from ember.train.callbacks import OverfittingWarning, OverfitWarning, callbacks


def test_finding_contract() -> None:
    f = Finding("shift", "warning", "moved", {"p_value": 0.01})
    assert f.to_dict() == {
        "name": "shift",
        "severity": "warning",
        "message": "moved",
        "evidence": {"p_value": 0.01},
    }
    with pytest.raises(ValueError, match="severity"):
        Finding("x", "fatal", "no")  # type: ignore[arg-type]


def test_imbalance_verdicts() -> None:
    assert check_imbalance(np.repeat(np.arange(3), 50)).severity == "info"
    skewed = check_imbalance(np.array([0] * 90 + [1] * 10), classes=["cat", "dog"])
    assert skewed.severity == "warning" and skewed.evidence["counts"] == {"cat": 90, "dog": 10}
    assert check_imbalance(np.array([0] * 250 + [1] * 10)).severity == "error"
    missing = check_imbalance(torch.tensor([0, 1, 0, 1]), num_classes=3)
    assert missing.severity == "error" and "2" in missing.message


def test_overfitting_from_curves_and_gaps() -> None:
    epochs = list(range(1, 9))
    overfit = {"epoch": epochs, "train_loss": [1.0, 0.7, 0.5, 0.35, 0.25, 0.15, 0.1, 0.05],
               "val_loss": [1.0, 0.8, 0.7, 0.72, 0.8, 0.9, 1.0, 1.1]}  # fmt: skip
    healthy = {"epoch": epochs, "train_loss": [1.0, 0.7, 0.5, 0.4, 0.35, 0.3, 0.28, 0.27],
               "val_loss": [1.0, 0.75, 0.6, 0.52, 0.5, 0.49, 0.5, 0.49]}  # fmt: skip
    curve = check_overfitting(overfit, None)[0]
    assert curve.severity == "warning" and curve.evidence["best_epoch"] == 3
    assert check_overfitting(healthy, None)[0].severity == "info"
    scores = {"metric": "accuracy", "mode": "max", "n_val": 400, "train_loss": 0.1, "val_loss": 0.5}
    assert check_overfitting(None, {**scores, "train": 0.97, "val": 0.95})[0].severity == "info"
    assert check_overfitting(None, {**scores, "train": 1.0, "val": 0.85})[0].severity == "warning"
    assert check_overfitting(None, {**scores, "train": 1.0, "val": 0.6})[0].severity == "error"
    loss_only = {
        "metric": "mse",
        "mode": "min",
        "n_val": 50,
        "train": 0.1,
        "val": 0.6,
        "train_loss": 0.1,
        "val_loss": 0.6,
    }
    gap = check_overfitting(None, loss_only)[0]
    assert gap.severity == "error" and gap.evidence["loss_ratio"] == 6.0


def _memorizer_data() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)  # random labels: nothing to learn, everything to memorize
    return (
        (torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)),
        (torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)),
    )


def test_overfit_warning_fires_during_training() -> None:
    train, val = _memorizer_data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 256), nn.ReLU(), nn.Linear(256, 3))
    watcher = callbacks.create("overfit_warning", patience=2)
    trainer = ember.Trainer(model, callbacks=[watcher], lr=1e-2, epochs=8, batch_size=16, log_every=2)
    with pytest.warns(OverfittingWarning, match="validation loss rose"):
        trainer.fit(train, val)
    assert isinstance(watcher, OverfitWarning) and watcher.finding is not None
    evidence = watcher.finding["evidence"]
    assert (
        evidence["val_loss"] > evidence["best_val_loss"]
        and evidence["train_loss"] < evidence["train_loss_at_best"]
    )
    assert evidence["first_epoch"] < 8  # an early warning, not a post-mortem
    assert len(watcher.history) == 8 and evidence["epoch"] == 8  # kept up to date afterwards


def test_overfit_warning_can_stop_training() -> None:
    train, val = _memorizer_data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 256), nn.ReLU(), nn.Linear(256, 3))
    watcher = OverfitWarning(patience=2, stop=True, warn=False)
    result = ember.Trainer(model, callbacks=[watcher], lr=1e-2, epochs=20, batch_size=16).fit(train, val)
    assert result.stop_reason.startswith("overfitting:") and len(watcher.history) < 20


@pytest.fixture(scope="module")
def leaky_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A tiny digits run whose test set holds 20 exact and 20 shifted copies of training images."""
    root = tmp_path_factory.mktemp("leaky")
    bundle = load_dataset("digits")
    x, y = bundle.train.x.numpy()[:, 0], bundle.train.y.numpy()  # (N, 8, 8) grey images
    x_test, y_test = x[1500:].copy(), y[1500:].copy()
    x_test[:20], y_test[:20] = x[:20], y[:20]
    x_test[20:40] = np.roll(x[20:40], 1, axis=2)
    x_test[20:40, :, 0] = 0.0  # shifted right by one pixel
    y_test[20:40] = y[20:40]
    np.savez(root / "leaky.npz", x=x[:1500], y=y[:1500], x_test=x_test, y_test=y_test)
    config = {
        "data": {"name": "npz", "path": str(root / "leaky.npz"), "val_fraction": 0.1},
        "model": {"name": "cnn_tiny"},
        "trainer": {"epochs": 2},
    }
    result = ember.fit(config, runs_dir=root / "runs", progress=False)
    return result.run_id, root / "runs"


def test_run_checks_finds_planted_leakage(leaky_run: tuple[str, Path]) -> None:
    run_id, runs = leaky_run
    findings = {f.name: f for f in run_checks(run_id, runs_dir=runs)}
    assert {"overfitting.curve", "overfitting.gap", "shift", "imbalance", "leakage.feature"} <= set(findings)
    leak = findings["leakage.duplicates:train/test"]
    # the first 20 of the pool went where the split put them: train or val. Those in train are
    # reported as train/test copies, those in val as val/test copies.
    both = (
        leak.evidence["exact_examples"] + findings["leakage.duplicates:val/test"].evidence["exact_examples"]
    )
    assert leak.severity == "error" and both == 20
    near = leak.evidence["near_examples"] + findings["leakage.duplicates:val/test"].evidence["near_examples"]
    assert near == 20 and leak.evidence["exact_label_conflicts"] == 0
    assert findings["leakage.duplicates:train/val"].severity == "info"
    assert all(f.evidence["run"] == run_id for f in findings.values())


def test_run_checks_with_model_embeddings_and_errors(leaky_run: tuple[str, Path]) -> None:
    run_id, runs = leaky_run
    findings = run_checks(run_id, runs_dir=runs, checks=["leakage"], near="embedding")
    train_test = next(f for f in findings if f.name == "leakage.duplicates:train/test")
    assert train_test.evidence["method"] == "embedding" and train_test.evidence["exact_examples"] > 0
    with pytest.raises(ValueError, match="unknown check"):
        run_checks(run_id, runs_dir=runs, checks=["leak"])


def test_check_leakage_on_arrays_names_each_pair() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((30, 1, 6, 6)).astype(np.float32)
    splits = {"train": (a, np.arange(30) % 2), "test": (a[:4].copy(), np.array([1, 1, 1, 1]))}
    dup, feature = check_leakage(splits)
    assert dup.name == "leakage.duplicates:train/test" and dup.severity == "error"
    assert dup.evidence["exact_label_conflicts"] == 2  # rows 0 and 2 are labelled 0 in train, 1 in test
    assert feature.severity == "info"
