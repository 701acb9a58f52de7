"""DP-SGD through the one training path: config section, transform, ε logged and stored."""

import logging

import pytest
import torch
from torch import nn

import ember
from ember.config import ConfigError
from ember.responsible.privacy import DPSGD, PoissonLoader, convert_batchnorm, make_private
from ember.track import RunStore

pytest.importorskip("opacus")

TINY = {
    "model.name": "dp_cnn_tiny",
    "trainer.epochs": 2,
    "data.batch_size": 64,
    "optim.name": "momentum",
    "optim.lr": 0.5,
    "schedule.name": "constant",
    "schedule.warmup": 0,
    "trainer.log_every": 5,
}


def test_train_with_privacy_epsilon_records_budget() -> None:
    result = ember.fit(
        {"data": {"name": "digits"}},
        {**TINY, "privacy.epsilon": 2.0, "privacy.max_grad_norm": 1.0, "privacy.delta": 1e-4},
    )
    m = result.metrics
    # σ was found so that the whole run spends (just under) the target
    assert 1.8 < m["privacy/epsilon"] <= 2.0
    assert m["privacy/epsilon_prv"] < m["privacy/epsilon_rdp"]
    assert m["privacy/steps"] == result.steps
    store = RunStore()
    record = store.get(result.run_id)
    assert record.summary["privacy/epsilon"] == pytest.approx(m["privacy/epsilon"])
    logged = [v for _, _, name, v in store.metrics(result.run_id, "privacy/epsilon")]
    assert logged and logged == sorted(logged)  # ε grows over training
    assert m["val/accuracy"] > 0.3  # it still learns


def test_batchnorm_converted_with_a_message(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ember.privacy"):
        result = ember.fit(
            {"data": {"name": "digits"}}, {**TINY, "model.name": "cnn_tiny", "privacy.noise_multiplier": 1.0}
        )
    assert "BatchNorm layer(s) replaced by GroupNorm" in caplog.text
    prep, _ = ember.recipe.load_run_model(result.run_id)  # rebuilt the same way: the weights load
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prep.model.modules())
    assert ember.evaluate_run(result.run_id, "val")["accuracy"] >= 0.0


@pytest.mark.parametrize(
    "override,match",
    [
        ({"trainer.accumulate": 2}, "trainer.accumulate=1"),
        ({"trainer.clip_grad_norm": 1.0}, "clip_grad_norm=0"),
        ({"privacy.noise_multiplier": 1.0}, "both set"),
        ({"privacy.accountant": "gdp"}, "is not one of"),
    ],
)
def test_config_errors(override: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ember.fit({"data": {"name": "digits"}}, {**TINY, "privacy.epsilon": 1.0, **override})


def test_convert_batchnorm_keeps_parameters() -> None:
    model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU())
    weight = model[1].weight
    assert convert_batchnorm(model) == ["1"]
    assert isinstance(model[1], nn.GroupNorm) and model[1].weight is weight and model[1].num_groups == 6


def test_step_clips_and_adds_calibrated_noise() -> None:
    # one example per batch, gradient far above C: the update is the clipped gradient plus noise
    torch.manual_seed(0)
    x, y = torch.randn(400, 3), torch.randint(0, 2, (400,))
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    from ember.data import ArrayData, make_loader

    loader = make_loader(ArrayData(x, y), batch_size=40, shuffle=True)
    model, opt, poisson, dp = make_private(
        model, opt, loader, epochs=1, noise_multiplier=0.0 + 1e-9, max_grad_norm=0.01
    )
    assert isinstance(poisson, PoissonLoader) and len(poisson) == 10 and poisson.sample_rate == 0.1
    xb, yb = next(iter(poisson))
    opt.zero_grad()
    nn.functional.cross_entropy(model(xb), yb).backward()
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    total = torch.sqrt(sum((b - p.detach()).square().sum() for b, p in zip(before, model.parameters())))
    assert total <= 0.01 * len(yb) / 40 + 1e-6  # |Σ clipped| <= B C, divided by the expected batch q N
    assert dp.budget.steps == 1


def test_poisson_batches_are_reproducible() -> None:
    loader = PoissonLoader(torch.arange(500.0)[:, None], torch.arange(500), sample_rate=0.05, seed=3)
    first = [y.tolist() for _, y in loader]
    loader.set_epoch(0, start_batch=4)
    assert [y.tolist() for _, y in loader] == first[4:]
    sizes = [len(b) for b in first]
    assert len(sizes) == 20 and len(set(sizes)) > 1  # Poisson: the size varies around 25


def test_dpsgd_needs_one_of_sigma_and_epsilon() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        DPSGD(delta=1e-5)


def test_privacy_overrides_as_typed_on_the_command_line() -> None:
    # YAML 1.1 reads 1e-5 (no dot) as a string; a float key takes it as the number it is
    cfg = ember.load_config({}, ["privacy.epsilon=3", "privacy.delta=1e-5"])
    assert cfg.privacy.delta == 1e-5 and cfg.privacy.enabled
    with pytest.raises(ConfigError, match="expected a number"):
        ember.load_config({}, ["privacy.delta=tiny"])
