"""Pruning: magnitude (zeros) and channels (layers really shrink), then fine-tuning with ember.Trainer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ember
from ember.deploy import prune
from ember.models import create


def test_magnitude_zeroes_the_smallest_weights_globally() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    pruned = prune.magnitude(model, 0.6)
    assert prune.sparsity(model) == 0.0  # the input is untouched
    assert prune.sparsity(pruned) == pytest.approx(0.6, abs=0.01)
    weights = torch.cat([model[0].weight.flatten(), model[2].weight.flatten()]).abs()
    threshold = weights.kthvalue(int(0.6 * len(weights))).values
    kept = pruned[0].weight != 0
    assert (model[0].weight.abs()[kept] >= threshold).all()  # what stayed is the largest
    assert not any(name.endswith("_orig") for name, _ in pruned.named_parameters())  # no masks left
    assert prune.sparsity(prune.magnitude(model, 0.5, per_layer=True)) == pytest.approx(0.5, abs=0.01)


def test_channels_removes_channels_and_keeps_the_interface() -> None:
    torch.manual_seed(0)
    model = create("cnn", in_channels=1, num_classes=10, image_size=8, width=8).eval()
    x = torch.rand(4, 1, 8, 8)
    small = prune.channels(model, 0.5, x)
    convs = [m for m in small.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 4, 8, 8, 16, 16]
    assert small.head.in_features == 16  # the head reads the pooled channels
    assert prune.parameter_count(small) < 0.3 * prune.parameter_count(model)
    assert small(x).shape == (4, 10)
    assert model.features[0].conv.out_channels == 8  # the input is untouched


def test_channels_at_zero_amount_is_the_same_function() -> None:
    torch.manual_seed(0)
    model = create("resnet_tiny", in_channels=1, num_classes=10, image_size=8).eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(prune.channels(model, 0.0, x)(x), model(x))


@pytest.mark.parametrize("name", ["resnet_tiny", "mobilenet_tiny", "mlp"])
def test_channels_prunes_only_what_is_free_to_shrink(name: str) -> None:
    torch.manual_seed(0)
    model = create(name, in_channels=1, num_classes=10, image_size=8).eval()
    x = torch.rand(4, 1, 8, 8)
    small = prune.channels(model, 0.5, x)  # residual adds stay whole; inner layers shrink
    assert prune.parameter_count(small) < prune.parameter_count(model)
    assert small(x).shape == model(x).shape


def test_channels_keeps_the_strongest_channels() -> None:
    conv1, conv2 = nn.Conv2d(1, 4, 1, bias=False), nn.Conv2d(4, 1, 1, bias=False)
    with torch.no_grad():
        conv1.weight.copy_(torch.tensor([1.0, 5.0, 0.1, 3.0]).view(4, 1, 1, 1))
        conv2.weight.fill_(1.0)
    model = nn.Sequential(conv1, nn.ReLU(), conv2)
    small = prune.channels(model, 0.5, torch.rand(1, 1, 2, 2))
    assert small[0].weight.flatten().tolist() == [5.0, 3.0]


def test_channels_refuses_a_model_with_nothing_to_prune() -> None:
    with pytest.raises(ValueError, match="nothing to prune"):
        prune.channels(nn.Sequential(nn.Linear(4, 2)), 0.5, torch.rand(1, 4))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune.channels(nn.Linear(4, 2), 1.0, torch.rand(1, 4))


def test_pruned_model_fine_tunes_with_the_trainer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    data = ember.data.load_dataset("digits").train
    x, y = data.x[:600], data.y[:600]
    model = create("cnn", in_channels=1, num_classes=10, image_size=8, width=8)
    ember.Trainer(model, lr=3e-3, epochs=2, batch_size=64, runs_dir=tmp_path, progress=False).fit((x, y))
    small = prune.channels(model.eval(), 0.5, x[:8])
    trainer = ember.Trainer(small, lr=3e-3, epochs=2, batch_size=64, runs_dir=tmp_path, progress=False)
    before = trainer.validate((x, y))["accuracy"]
    trainer.fit((x, y))
    after = trainer.validate((x, y))["accuracy"]
    assert after > before and after > 0.5
