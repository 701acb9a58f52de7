import pytest
import torch

from ember.nn import DropPath


def test_drop_path_is_identity_in_eval() -> None:
    x = torch.randn(8, 4, 3, 3)
    assert torch.equal(DropPath(0.5).eval()(x), x)


def test_drop_path_zero_is_identity_in_train() -> None:
    x = torch.randn(8, 4)
    assert torch.equal(DropPath(0.0)(x), x)


def test_drop_path_drops_whole_samples_and_keeps_the_mean() -> None:
    torch.manual_seed(0)
    y = DropPath(0.25).train()(torch.ones(20_000, 3, 2))
    per_sample = y.flatten(1)
    # each sample is either dropped entirely or scaled by 1 / (1 - p)
    assert torch.all((per_sample == 0).all(1) | (per_sample == 1 / 0.75).all(1))
    assert abs(y.mean().item() - 1.0) < 0.02
    assert abs((per_sample[:, 0] == 0).float().mean().item() - 0.25) < 0.02


def test_drop_path_rejects_bad_probability() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        DropPath(1.0)
