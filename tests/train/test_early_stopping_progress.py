"""Early stopping ends with the best validation's weights (and says so); the progress bar counts epochs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from ember.track import RunStore
from ember.train import Trainer


def test_early_stopping_restores_the_best_weights(toy_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = toy_data
    wrong = (
        y + 1
    ) % 3  # validation labels the training labels contradict: val loss rises as training goes on
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    trainer = Trainer(
        model, lr=0.05, epochs=30, batch_size=16, early_stopping_metric="val/loss", early_stopping_patience=2
    )
    result = trainer.fit((x, y), (x, wrong))
    losses = [h["val/loss"] for h in result.history]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert best < len(losses) - 1  # it did stop after a worse validation
    assert f"restored the weights of epoch {result.history[best]['epoch']}" in result.stop_reason
    assert result.metrics["val/loss"] == pytest.approx(losses[best])
    assert trainer.validate((x, wrong))["loss"] == pytest.approx(losses[best], rel=1e-5)
    saved = load_file(result.run_dir / "model.safetensors")
    assert torch.equal(saved["0.weight"], model[0].weight.detach().cpu())  # the run's final model is the best
    assert "restored the weights" in RunStore().get(result.run_id).summary["stop_reason"]


def test_progress_bar_ends_on_the_last_epoch(
    toy_data: tuple[torch.Tensor, torch.Tensor], capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = toy_data
    torch.manual_seed(0)
    Trainer(nn.Linear(8, 3), epochs=3, batch_size=32, log_every=1, progress=True).fit((x, y), (x, y))
    frames = capsys.readouterr().err.replace("\r", "\n").splitlines()
    last = [f for f in frames if "epoch" in f][-1]
    assert "epoch 3/3" in last and "9/9" in last
    assert not any("epoch 4/3" in f for f in frames)
