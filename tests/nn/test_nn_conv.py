import torch
from torch import nn

from ember.nn import ConvBlock, DepthwiseSeparable, SqueezeExcite


def test_conv_block_shapes_and_bias() -> None:
    block = ConvBlock(3, 16, stride=2)
    assert block(torch.randn(2, 3, 9, 9)).shape == (2, 16, 5, 5)
    assert block.conv.bias is None  # a norm follows, so a bias would be redundant
    assert ConvBlock(3, 16, norm="none").conv.bias is not None


def test_conv_block_composes_norm_and_act_by_name() -> None:
    block = ConvBlock(8, 8, 1, norm="group", act="silu")
    assert isinstance(block.norm, nn.GroupNorm)
    assert isinstance(block.act, nn.SiLU)


def test_depthwise_separable_is_cheaper_than_a_plain_conv() -> None:
    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert count(DepthwiseSeparable(32, 64)) < count(nn.Conv2d(32, 64, 3)) / 4


def test_depthwise_separable_shapes_and_residual() -> None:
    x = torch.randn(2, 16, 8, 8)
    assert DepthwiseSeparable(16, 32, stride=2)(x).shape == (2, 32, 4, 4)
    inverted = DepthwiseSeparable(16, 16, expand_ratio=4, se=True)
    assert inverted.use_residual
    assert inverted(x).shape == x.shape
    assert not DepthwiseSeparable(16, 16, stride=2, expand_ratio=4).use_residual
    assert not DepthwiseSeparable(16, 16).use_residual  # the v1 block has no shortcut


def test_squeeze_excite_rescales_each_channel_within_its_range() -> None:
    se = SqueezeExcite(16)
    x = torch.rand(2, 16, 4, 4) + 0.1
    y = se(x)
    assert y.shape == x.shape
    ratio = y / x  # one sigmoid gate per (sample, channel), constant over space
    assert torch.all((ratio > 0) & (ratio < 1))
    torch.testing.assert_close(ratio, ratio[..., :1, :1].expand_as(ratio))
