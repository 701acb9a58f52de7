import math

import pytest
import torch
from torch import nn

from ember.config import OptimConfig, ScheduleConfig
from ember.train.optim import build_optimizer, build_schedule, optimizers, schedules

EXPECTED = {
    "sgd": torch.optim.SGD,
    "momentum": torch.optim.SGD,
    "nesterov": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
}


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 1))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_optimizer_by_name_reduces_a_quadratic(name: str) -> None:
    assert set(optimizers.names()) == set(EXPECTED)
    torch.manual_seed(0)
    model = _model()
    opt = build_optimizer(model, OptimConfig(name=name, lr=0.05, weight_decay=0.01))
    assert type(opt) is EXPECTED[name]
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    first = None
    for _ in range(30):
        loss = nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    if name == "nesterov":
        assert opt.param_groups[0]["nesterov"] is True
    if name in ("momentum", "nesterov"):
        assert opt.param_groups[0]["momentum"] == 0.9


def test_weight_decay_stays_off_biases_and_norms() -> None:
    model = _model()
    opt = build_optimizer(model, OptimConfig(name="adamw", weight_decay=0.1))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.ndim >= 2), name


def test_explicit_groups_keep_their_learning_rates() -> None:
    model = _model()
    groups = [{"params": model[0].parameters(), "lr": 1e-4}, {"params": model[2].parameters()}]
    opt = build_optimizer(groups, OptimConfig(name="sgd", lr=0.1))
    assert [g["base_lr"] for g in opt.param_groups] == [1e-4, 0.1]


def _curve(name: str, **kw: object) -> list[float]:
    f = build_schedule(ScheduleConfig(name=name, **kw), total_steps=100, steps_per_epoch=10)  # type: ignore[arg-type]
    return [f(s) for s in range(100)]


def test_schedules_by_name() -> None:
    assert set(schedules.names()) == {"constant", "cosine", "linear", "step", "multistep", "onecycle"}
    assert _curve("constant") == [1.0] * 100
    cos = _curve("cosine")
    assert cos[0] == 1.0 and abs(cos[50] - 0.5) < 1e-9 and cos[99] < 0.001
    assert all(a >= b for a, b in zip(cos, cos[1:]))
    lin = _curve("linear", min_lr_ratio=0.1)
    assert lin[0] == 1.0 and abs(lin[50] - 0.55) < 1e-9
    step = _curve("step", step_size=3, gamma=0.5)  # every 3 epochs = 30 steps
    assert step[29] == 1.0 and step[30] == 0.5 and step[60] == 0.25
    multi = _curve("multistep", milestones=(0.5, 0.8), gamma=0.1)
    assert multi[49] == 1.0 and math.isclose(multi[50], 0.1) and math.isclose(multi[80], 0.01)
    epochs = _curve("multistep", milestones=(2, 5), gamma=0.1)  # epochs when >= 1
    assert epochs[19] == 1.0 and math.isclose(epochs[20], 0.1) and math.isclose(epochs[50], 0.01)
    one = _curve("onecycle")
    peak = one.index(max(one))
    assert 25 <= peak <= 31 and one[0] < 0.1 and one[-1] < 0.01


def test_warmup_as_fraction_and_as_steps() -> None:
    frac = _curve("cosine", warmup=0.1)
    steps = _curve("cosine", warmup=10)
    assert frac == steps
    assert frac[0] == pytest.approx(1 / 11) and frac[9] == pytest.approx(10 / 11) and frac[10] == 1.0
    assert all(a < b for a, b in zip(frac[:10], frac[1:11]))


def test_unknown_names_suggest() -> None:
    with pytest.raises(KeyError, match="did you mean 'adamw'"):
        build_optimizer(_model(), OptimConfig(name="adamww"))
    with pytest.raises(KeyError, match="did you mean 'cosine'"):
        build_schedule(ScheduleConfig(name="cosin"), total_steps=10, steps_per_epoch=1)
