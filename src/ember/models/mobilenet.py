"""MobileNet: a conv stem, then stages of depthwise-separable blocks (inverted residuals, optional SE).

Example:
    >>> import torch
    >>> from ember.models import create
    >>> create("mobilenet_tiny", in_channels=3, image_size=32)(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ember.models._zoo import register_family, register_variant
from ember.nn import ConvBlock, DepthwiseSeparable


@dataclass(frozen=True)
class MobileNetConfig:
    """Shape of a ``MobileNet``."""

    in_channels: int = 3
    """Input channels C."""
    num_classes: int = 10
    """Output logits K."""
    image_size: int = 32
    """Input side (unused: global pooling accepts any size; kept so every vision builder agrees)."""
    width: int = 16
    """Channels of the stem and first stage; each later stage doubles them."""
    depths: tuple[int, ...] = (1, 2, 2, 2)
    """Blocks per stage; every stage after the first starts with a stride-2 block."""
    expand_ratio: int = 4
    """Hidden expansion of the blocks after the first stage (> 1: v2's inverted residual, 1: v1's
    block); the first stage always uses 1, as in MobileNet v2, to keep full resolution cheap."""
    se: bool = True
    """Squeeze-excite inside every block (as in MobileNet v3)."""
    dropout: float = 0.0
    """Dropout before the linear head."""
    norm: str = "batch"
    """Norm after each conv, a ``make_norm`` name."""
    act: str = "relu"
    """Activation, a ``get_activation`` name."""


class MobileNet(nn.Module):
    """Stem ConvBlock → stages of ``DepthwiseSeparable`` blocks → global average pool → linear.

    Args:
        config: the shape; see ``MobileNetConfig``.

    Example:
        >>> MobileNet(MobileNetConfig(width=8, depths=(1, 1)))(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(self, config: MobileNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.stem = ConvBlock(c.in_channels, c.width, 3, norm=c.norm, act=c.act)
        blocks: list[nn.Module] = []
        ch = c.width
        for i, depth in enumerate(c.depths):
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                out = c.width * 2**i
                block = DepthwiseSeparable(
                    ch,
                    out,
                    stride,
                    norm=c.norm,
                    act=c.act,
                    expand_ratio=1 if i == 0 else c.expand_ratio,
                    se=c.se,
                )
                blocks.append(block)
                ch = out
        self.blocks = nn.Sequential(*blocks)
        self.num_features = ch
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(ch, c.num_classes)

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


register_family(MobileNetConfig, MobileNet)
register_variant("mobilenet", MobileNetConfig, "Stages of 1, 2, 2, 2 SE blocks (16, 32, 64, 128 channels)")
register_variant(
    "mobilenet_tiny",
    MobileNetConfig,
    "Stages of 1 and 2 blocks (8 and 16 channels; covers every block path), for tests and CI",
    width=8,
    depths=(1, 2),
    expand_ratio=2,
)
