"""ResNet for small images: a 3x3 stem (no max-pool), stages of basic residual blocks, linear head.

Sized for 8x8 to 32x32 inputs (digits, MNIST, Fashion-MNIST, CIFAR): the first stage keeps the full
resolution and each later stage halves it and doubles the width.

Example:
    >>> import torch
    >>> from ember.models import create
    >>> create("resnet_tiny", in_channels=1, image_size=28)(torch.randn(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ember.models._zoo import register_family, register_variant
from ember.nn import ConvBlock, ResidualBlock


@dataclass(frozen=True)
class ResNetConfig:
    """Shape of a ``ResNet``."""

    in_channels: int = 3
    """Input channels C."""
    num_classes: int = 10
    """Output logits K."""
    image_size: int = 32
    """Input side (unused: global pooling accepts any size; kept so every vision builder agrees)."""
    width: int = 32
    """Channels of the stem and first stage; each later stage doubles them."""
    depths: tuple[int, ...] = (2, 2, 2)
    """Residual blocks per stage; every stage after the first starts with a stride-2 block."""
    dropout: float = 0.0
    """Dropout before the linear head."""
    drop_path: float = 0.0
    """Stochastic-depth rate of the last block; earlier blocks get linearly less (0 for the first)."""
    norm: str = "batch"
    """Norm after each conv, a ``make_norm`` name."""
    act: str = "relu"
    """Activation, a ``get_activation`` name."""
    channels_last: bool = False
    """Keep weights channels-last (NHWC): oneDNN's NHWC kernels run narrow convs faster on CPU."""


class ResNet(nn.Module):
    """Residual network: stem ConvBlock → stages of ``ResidualBlock`` → global average pool → linear.

    Args:
        config: the shape; see ``ResNetConfig``.

    Example:
        >>> ResNet(ResNetConfig(width=8, depths=(1, 1)))(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.stem = ConvBlock(c.in_channels, c.width, 3, norm=c.norm, act=c.act)
        total = sum(c.depths)
        blocks: list[nn.Module] = []
        ch = c.width
        for i, depth in enumerate(c.depths):
            for j in range(depth):
                rate = c.drop_path * len(blocks) / max(total - 1, 1)
                stride = 2 if i > 0 and j == 0 else 1
                out = c.width * 2**i
                blocks.append(ResidualBlock(ch, out, stride, norm=c.norm, act=c.act, drop_path=rate))
                ch = out
        self.blocks = nn.Sequential(*blocks)
        self.num_features = ch
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(ch, c.num_classes)
        if c.channels_last:
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, F, H / 2^(stages-1), W / 2^(stages-1))
        return self.blocks(self.stem(x))

    def forward_head(self, feats: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        # (B, F, h, w) -> (B, F) pooled -> (B, K)
        pooled = self.dropout(feats.mean(dim=(2, 3)))
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, K)
        return self.forward_head(self.forward_features(x))


register_family(ResNetConfig, ResNet)
register_variant("resnet", ResNetConfig, "Three stages of two blocks (32, 64, 128 channels)")
register_variant(
    "resnet18",
    ResNetConfig,
    "ResNet-18's blocks (64 to 512 channels) with the small-image stem",
    width=64,
    depths=(2, 2, 2, 2),
)
register_variant(
    "resnet_tiny",
    ResNetConfig,
    "Two one-block stages of 8 and 16 channels, for tests and CI",
    width=8,
    depths=(1, 1),
    drop_path=0.1,
)
