"""trainer.ema: the average's arithmetic, its evaluation and files, and an exact resume with it."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from ember.config import ConfigError
from ember.track import RunStore
from ember.train import Trainer, load_checkpoint
from ember.train.ema import EMA, ema_decay


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))


def test_the_average_follows_the_formula_with_its_warm_up() -> None:
    model = nn.Linear(3, 2)
    ema = EMA(model, 0.99)
    expected = [p.detach().clone() for p in model.parameters()]
    for n in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        d = ema_decay(0.99, n)
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, model.parameters())]
        ema.update(updates=n)
    for e, got in zip(expected, ema.averages().values()):
        torch.testing.assert_close(got, e)
    assert ema_decay(0.99, 0) == pytest.approx(0.1) and ema_decay(0.99, 10_000) == 0.99
    before = [p.detach().clone() for p in model.parameters()]
    with ema.applied():
        assert all(torch.equal(p, a) for p, a in zip(model.parameters(), ema.averages().values()))
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    with pytest.raises(ConfigError, match=r"trainer.ema must be in \(0, 1\)"):
        EMA(model, 1.0)


def test_the_average_is_validated_saved_and_checkpointed(toy_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = toy_data
    result = Trainer(_mlp(), lr=0.05, epochs=3, batch_size=16, ema=0.9).fit((x, y), (x, y))
    assert 0.0 <= result.metrics["val/ema/accuracy"] <= 1.0
    assert "val/ema/loss" in result.history[-1]
    logged = {name for _, _, name, _ in RunStore().metrics(result.run_id)}
    assert {"val/ema/accuracy", "val/ema/loss"} <= logged
    model, averaged = (load_file(result.run_dir / f) for f in ("model.safetensors", "ema.safetensors"))
    assert model.keys() == averaged.keys()  # loads into the same model
    assert not torch.equal(model["0.weight"], averaged["0.weight"])
    assert torch.equal(model["1.running_mean"], averaged["1.running_mean"])  # buffers: the model's own
    (last,) = sorted((result.run_dir / "checkpoints").glob("step-*"))[-1:]
    tensors = load_checkpoint(last).tensors
    assert torch.equal(tensors["ema/0.weight"], averaged["0.weight"])


def test_a_resumed_run_continues_the_same_average(toy_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = toy_data
    options = {"lr": 0.05, "epochs": 3, "batch_size": 16, "ema": 0.9, "checkpoint_every": 4, "seed": 1}
    straight = Trainer(_mlp(), **options).fit((x, y))

    class Stop:
        def on_step_end(self, state) -> None:  # type: ignore[no-untyped-def]
            if state.step == 9:
                raise KeyboardInterrupt

    first = Trainer(_mlp(), callbacks=[Stop()], **options)
    with pytest.raises(KeyboardInterrupt):
        first.fit((x, y))
    assert first.run is not None
    resumed = Trainer(_mlp(), **options).fit((x, y), resume=first.run.id)
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(straight.run_dir / name), load_file(resumed.run_dir / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
