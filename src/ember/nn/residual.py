"""The basic ResNet block (two 3x3 convs and a shortcut), with optional stochastic depth.

Example:
    >>> import torch
    >>> from ember.nn import ResidualBlock
    >>> ResidualBlock(16, 32, stride=2)(torch.randn(2, 16, 8, 8)).shape
    torch.Size([2, 32, 4, 4])
"""

from __future__ import annotations

import torch
from torch import nn

from ember.nn.activations import get_activation
from ember.nn.conv import ConvBlock
from ember.nn.dropout import DropPath


class ResidualBlock(nn.Module):
    """``act(shortcut(x) + drop_path(conv2(conv1(x))))``, the basic block of ResNet-18/34.

    The shortcut is the identity when shapes match, else a strided 1x1 conv + norm (projection).

    Args:
        in_ch: input channels.
        out_ch: output channels.
        stride: stride of the first conv (and of the projection).
        norm: a ``make_norm`` name.
        act: a ``get_activation`` name.
        drop_path: probability of dropping the residual branch per sample while training.

    Example:
        >>> ResidualBlock(8, 8, drop_path=0.1)(torch.randn(2, 8, 6, 6)).shape
        torch.Size([2, 8, 6, 6])
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        *,
        norm: str = "batch",
        act: str = "relu",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv1 = ConvBlock(in_ch, out_ch, 3, stride, norm=norm, act=act)
        self.conv2 = ConvBlock(out_ch, out_ch, 3, 1, norm=norm, act="identity")
        if stride != 1 or in_ch != out_ch:
            self.shortcut: nn.Module = ConvBlock(in_ch, out_ch, 1, stride, norm=norm, act="identity")
        else:
            self.shortcut = nn.Identity()
        self.drop_path = DropPath(drop_path)
        self.act = get_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride)
        return self.act(self.shortcut(x) + self.drop_path(self.conv2(self.conv1(x))))
