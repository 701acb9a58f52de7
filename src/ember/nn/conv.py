"""Convolution blocks: conv → norm → act, depthwise-separable (MobileNet), squeeze-excite.

Example:
    >>> import torch
    >>> from ember.nn import ConvBlock
    >>> ConvBlock(3, 16, stride=2)(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 16, 16, 16])
"""

from __future__ import annotations

import torch
from torch import nn

from ember.nn.activations import get_activation
from ember.nn.norm import make_norm


class ConvBlock(nn.Module):
    """``Conv2d`` ("same" padding) → norm → activation; the conv has no bias when a norm follows.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        kernel_size: square kernel size (odd, so padding keeps H, W at stride 1).
        stride: spatial stride.
        norm: a ``make_norm`` name ("batch", "group", "layer", "rms", "none").
        act: a ``get_activation`` name ("identity" for none).
        groups: conv groups (``in_ch`` for a depthwise conv).

    Example:
        >>> ConvBlock(8, 8, groups=8)(torch.randn(1, 8, 5, 5)).shape
        torch.Size([1, 8, 5, 5])
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        norm: str = "batch",
        act: str = "relu",
        groups: int = 1,
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, pad, groups=groups, bias=norm == "none")
        self.norm = make_norm(norm, out_ch, dims=2)
        self.act = get_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride)
        return self.act(self.norm(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Channel attention: global pool → bottleneck MLP → sigmoid gates that rescale each channel.

    Args:
        ch: channels in and out.
        reduction: the bottleneck has ``max(8, ch // reduction)`` channels.

    Example:
        >>> SqueezeExcite(32)(torch.randn(2, 32, 4, 4)).shape
        torch.Size([2, 32, 4, 4])
    """

    def __init__(self, ch: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(8, ch // reduction)
        self.reduce = nn.Conv2d(ch, hidden, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(hidden, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, C, 1, 1) gates -> (B, C, H, W)
        gate = self.expand(self.act(self.reduce(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class DepthwiseSeparable(nn.Module):
    """MobileNet block: [1x1 expand] → 3x3 depthwise → [squeeze-excite] → 1x1 pointwise.

    With ``expand_ratio=1`` this is MobileNet v1's block (activation after both convs). With
    ``expand_ratio > 1`` it is MobileNet v2's inverted residual: the projection is linear and the
    input is added back when stride is 1 and ``in_ch == out_ch``.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        stride: stride of the depthwise conv.
        norm: a ``make_norm`` name.
        act: a ``get_activation`` name.
        expand_ratio: hidden channels = ``in_ch * expand_ratio``.
        se: insert a ``SqueezeExcite`` after the depthwise conv.

    Example:
        >>> DepthwiseSeparable(16, 32, stride=2)(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 32, 4, 4])
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        *,
        norm: str = "batch",
        act: str = "relu",
        expand_ratio: int = 1,
        se: bool = False,
    ) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        inverted = expand_ratio > 1
        self.expand = ConvBlock(in_ch, hidden, 1, norm=norm, act=act) if inverted else nn.Identity()
        self.depthwise = ConvBlock(hidden, hidden, 3, stride, norm=norm, act=act, groups=hidden)
        self.se = SqueezeExcite(hidden) if se else nn.Identity()
        self.pointwise = ConvBlock(hidden, out_ch, 1, norm=norm, act="identity" if inverted else act)
        self.use_residual = inverted and stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride)
        out = self.pointwise(self.se(self.depthwise(self.expand(x))))
        return x + out if self.use_residual else out
