import pytest
import torch
from torch import nn

from ember.nn import RMSNorm, default_groups, list_norms, make_norm


def test_rmsnorm_matches_torch() -> None:
    ours, ref = RMSNorm(16, eps=1e-6), nn.RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        ours.weight.normal_()
        ref.weight.copy_(ours.weight)
    x = torch.randn(3, 5, 16) * 4
    torch.testing.assert_close(ours(x), ref(x), atol=1e-6, rtol=1e-5)


def test_rmsnorm_keeps_low_precision_dtype() -> None:
    x = torch.randn(2, 8, dtype=torch.bfloat16)
    assert RMSNorm(8).to(torch.bfloat16)(x).dtype == torch.bfloat16


@pytest.mark.parametrize("name", ["batch", "layer", "rms", "group", "none"])
@pytest.mark.parametrize("shape", [(4, 16), (4, 16, 9), (4, 16, 5, 5)])
def test_make_norm_keeps_shape(name: str, shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape)
    assert make_norm(name, 16, dims=len(shape) - 2)(x).shape == x.shape


def test_layer_norm_on_feature_maps_normalizes_channels_per_pixel() -> None:
    x = torch.randn(2, 16, 5, 5) * 3 + 1
    y = make_norm("layer", 16, dims=2)(x)
    torch.testing.assert_close(y.mean(dim=1), torch.zeros(2, 5, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=1, unbiased=False), torch.ones(2, 5, 5), atol=1e-3, rtol=0)


def test_layer_norm_on_features_is_torch_layernorm() -> None:
    assert isinstance(make_norm("layer", 8, dims=0), nn.LayerNorm)


@pytest.mark.parametrize("channels", [3, 8, 16, 24, 64, 96, 256])
def test_group_norm_groups_divide_channels(channels: int) -> None:
    norm = make_norm("group", channels)
    assert isinstance(norm, nn.GroupNorm)
    assert channels % norm.num_groups == 0
    assert norm.num_groups == default_groups(channels) <= 32


def test_list_norms() -> None:
    assert list_norms() == ["batch", "group", "layer", "none", "rms"]


def test_unknown_norm_and_bad_dims_are_explained() -> None:
    with pytest.raises(KeyError, match="did you mean 'batch'"):
        make_norm("bacth", 8)
    with pytest.raises(ValueError, match="dims must be"):
        make_norm("batch", 8, dims=4)
