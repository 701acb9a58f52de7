"""U-Net (Ronneberger et al., 2015): an encoder-decoder with skips, for per-pixel classification.

Each encoder level is two 3x3 ``ConvBlock`` s and a 2x2 max-pool that halves the map and doubles the
channels; the decoder upsamples with a 2x2 transposed conv, concatenates the encoder's map of the
same level and applies two ``ConvBlock`` s; a 1x1 conv gives the class logits at full resolution.
Sizes that do not divide by ``2 ** depth`` work too: an upsampled map is resized to its skip's size.

Example:
    >>> import torch
    >>> from ember.models import create
    >>> create("unet_tiny", in_channels=1, num_classes=11)(torch.randn(2, 1, 64, 64)).shape
    torch.Size([2, 11, 64, 64])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ember.models._zoo import register_family, register_variant
from ember.nn import ConvBlock

__all__ = ["UNet", "UNetConfig"]


@dataclass(frozen=True)
class UNetConfig:
    """Shape of a ``UNet``."""

    in_channels: int = 1
    """Input channels C."""
    num_classes: int = 11
    """Output classes K per pixel (background included)."""
    image_size: int = 64
    """Input side (unused: the model is fully convolutional; kept so every vision builder agrees)."""
    width: int = 16
    """Channels of the full-resolution level; each level down doubles them."""
    depth: int = 3
    """Down-sampling steps (the bottleneck works at 1 / 2**depth of the input side)."""
    norm: str = "batch"
    """Norm after each conv, a ``make_norm`` name."""
    act: str = "relu"
    """Activation, a ``get_activation`` name."""
    channels_last: bool = False
    """Keep weights channels-last (NHWC): several times faster convs on CPU for these small widths."""


def _double(in_ch: int, out_ch: int, norm: str, act: str) -> nn.Sequential:
    return nn.Sequential(
        ConvBlock(in_ch, out_ch, 3, norm=norm, act=act), ConvBlock(out_ch, out_ch, 3, norm=norm, act=act)
    )


class UNet(nn.Module):
    """Encoder → bottleneck → decoder with skips → 1x1 classifier (see the module docstring).

    Args:
        config: the shape; see ``UNetConfig``.

    Example:
        >>> UNet(UNetConfig(width=4, depth=2))(torch.randn(1, 1, 20, 20)).shape
        torch.Size([1, 11, 20, 20])
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = c = config
        if c.depth < 1:
            raise ValueError(f"depth must be at least 1; got {c.depth}")
        widths = [c.width * 2**i for i in range(c.depth + 1)]
        self.down = nn.ModuleList()
        ch = c.in_channels
        for out in widths[:-1]:
            self.down.append(_double(ch, out, c.norm, c.act))
            ch = out
        self.bottleneck = _double(ch, widths[-1], c.norm, c.act)
        self.up = nn.ModuleList()
        self.decode = nn.ModuleList()
        for level in reversed(range(c.depth)):
            self.up.append(nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2))
            self.decode.append(_double(2 * widths[level], widths[level], c.norm, c.act))
        self.num_features = widths[0]
        self.head = nn.Conv2d(widths[0], c.num_classes, 1)
        if c.channels_last:
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, width, H, W)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2, ceil_mode=True)
        x = self.bottleneck(x)
        for up, block, skip in zip(self.up, self.decode, reversed(skips)):
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([skip, x], dim=1))
        return x

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        # (B, width, H, W) -> (B, K, H, W) logits
        return self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


register_family(UNetConfig, UNet)
register_variant("unet", UNetConfig, "A U-Net of 16/32/64 channels and a 128-channel bottleneck")
register_variant(
    "unet_tiny", UNetConfig, "A two-level U-Net of 4/8/16 channels, for tests and CI", width=4, depth=2
)
