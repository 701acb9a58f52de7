import torch
from torch import nn

from ember.nn import ConvBlock, ResidualBlock


def test_identity_shortcut_when_shape_is_kept() -> None:
    block = ResidualBlock(16, 16)
    assert isinstance(block.shortcut, nn.Identity)
    assert block(torch.randn(2, 16, 6, 6)).shape == (2, 16, 6, 6)


def test_projection_shortcut_when_shape_changes() -> None:
    for in_ch, out_ch, stride in [(16, 32, 1), (16, 16, 2), (8, 32, 2)]:
        block = ResidualBlock(in_ch, out_ch, stride)
        assert isinstance(block.shortcut, ConvBlock)
        assert block(torch.randn(2, in_ch, 7, 7)).shape == (
            2,
            out_ch,
            4 if stride == 2 else 7,
            4 if stride == 2 else 7,
        )


def test_residual_block_adds_the_shortcut() -> None:
    block = ResidualBlock(8, 8, norm="none", act="identity").eval()
    with torch.no_grad():
        block.conv2.conv.weight.zero_()
        block.conv2.conv.bias.zero_()  # type: ignore[union-attr]
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(block(x), x)


def test_drop_path_is_wired_and_gradients_flow() -> None:
    block = ResidualBlock(8, 16, stride=2, norm="group", act="gelu", drop_path=0.2)
    assert block.drop_path.p == 0.2
    block(torch.randn(3, 8, 8, 8)).sum().backward()
    assert all(p.grad is not None for p in block.parameters())
