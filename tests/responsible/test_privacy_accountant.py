"""The accountants reproduce Opacus's own test values (Opacus is the oracle)."""

import math

import pytest

from ember.responsible.privacy import Budget, epsilon, noise_multiplier_for

pytest.importorskip("opacus")


def test_rdp_epsilon_matches_opacus_test_value() -> None:
    # opacus/tests/accountants_test.py: σ = 1.5, q = 0.04, 90 epochs = 2,250 steps, δ = 1e-5
    eps = epsilon(noise_multiplier=1.5, sample_rate=0.04, steps=2250, delta=1e-5, accountant="rdp")
    assert eps == pytest.approx(7.32911, abs=1e-5)


def test_prv_epsilon_matches_opacus_test_value() -> None:
    eps = epsilon(noise_multiplier=1.5, sample_rate=0.04, steps=2249, delta=1e-5, accountant="prv")
    assert eps == pytest.approx(6.77740, abs=1e-5)


def test_noise_multiplier_for_target_epsilon() -> None:
    sigma = noise_multiplier_for(8.0, delta=1e-5, sample_rate=0.04, steps=int(90 / 0.04))
    assert sigma == pytest.approx(1.416, abs=1e-3)
    # and the σ found spends at most the target
    assert epsilon(noise_multiplier=sigma, sample_rate=0.04, steps=2250, delta=1e-5) <= 8.0


def test_edges() -> None:
    assert epsilon(noise_multiplier=1.0, sample_rate=0.1, steps=0, delta=1e-5) == 0.0
    assert math.isinf(epsilon(noise_multiplier=0.0, sample_rate=0.1, steps=5, delta=1e-5))
    with pytest.raises(ValueError, match="unknown privacy accountant 'gdp'"):
        epsilon(noise_multiplier=1.0, sample_rate=0.1, steps=5, delta=1e-5, accountant="gdp")
    with pytest.raises(ValueError, match="must be positive"):
        noise_multiplier_for(0.0, delta=1e-5, sample_rate=0.1, steps=10)


def test_budget_reports_both_accountants() -> None:
    budget = Budget(noise_multiplier=1.5, sample_rate=0.04, delta=1e-5, max_grad_norm=1.0, steps=2250)
    report = budget.to_dict()
    assert report["epsilon"] == pytest.approx(7.32911, abs=1e-5)
    assert report["epsilon_by_accountant"]["prv"] < report["epsilon_by_accountant"]["rdp"]
