"""DPCNN: the small tanh CNN used for differentially private training on MNIST-like images.

Two strided convs with tanh and stride-1 max-pooling, then a tanh hidden layer (Papernot et al.
2021, "Tempered sigmoid activations"; the end-to-end CNN of Tramèr & Boneh 2021: 86.0% on
Fashion-MNIST at ε = 3). Bounded activations keep clipped gradients informative, and its ~26k
parameters keep DP-SGD's noise small per parameter. No BatchNorm: DP-SGD forbids it.

Example:
    >>> import torch
    >>> from ember.models import create
    >>> create("dp_cnn", in_channels=1, image_size=28)(torch.randn(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ember.models._zoo import register_model
from ember.nn import get_activation


@dataclass(frozen=True)
class DPCNNConfig:
    """Shape of a ``DPCNN``."""

    in_channels: int = 1
    """Input channels C."""
    num_classes: int = 10
    """Output logits K."""
    image_size: int = 28
    """Input side; fixes the flattened feature size."""
    channels: tuple[int, int] = (16, 32)
    """Output channels of the two convs."""
    kernels: tuple[int, int] = (8, 4)
    """Kernel sizes of the two convs."""
    strides: tuple[int, int] = (2, 2)
    """Strides of the two convs."""
    paddings: tuple[int, int] = (2, 0)
    """Zero padding of the two convs."""
    hidden: int = 32
    """Width of the hidden linear layer."""
    act: str = "tanh"
    """Activation, a ``get_activation`` name (tanh: the tempered sigmoid that suits DP-SGD)."""


class DPCNN(nn.Module):
    """conv → act → maxpool(2, 1), twice → flatten → linear → act → linear."""

    def __init__(self, config: DPCNNConfig) -> None:
        super().__init__()
        self.config = c = config
        layers: list[nn.Module] = []
        ch, side = c.in_channels, c.image_size
        for out, k, s, p in zip(c.channels, c.kernels, c.strides, c.paddings):
            layers += [nn.Conv2d(ch, out, k, s, p), get_activation(c.act), nn.MaxPool2d(2, 1)]
            ch, side = out, (side + 2 * p - k) // s + 1 - 1
        if side < 1:
            raise ValueError(
                f"dp_cnn: a {c.image_size}px input shrinks to nothing; use smaller kernels or strides"
            )
        self.features = nn.Sequential(*layers)
        self.num_features = ch * side * side
        self.hidden = nn.Linear(self.num_features, c.hidden)
        self.act = get_activation(c.act)
        self.head = nn.Linear(c.hidden, c.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, F) flattened conv features
        return self.features(x).flatten(1)

    def forward_head(self, feats: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        # (B, F) -> (B, hidden) -> (B, K)
        h = self.act(self.hidden(feats))
        return h if pre_logits else self.head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("dp_cnn")
def dp_cnn(
    *, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, hidden: int = 32, act: str = "tanh"
) -> DPCNN:
    """The 26k-parameter tanh CNN of Tramèr & Boneh (2021) for 28x28 images."""
    return DPCNN(
        DPCNNConfig(
            in_channels=in_channels, num_classes=num_classes, image_size=image_size, hidden=hidden, act=act
        )
    )


@register_model("dp_cnn_tiny")
def dp_cnn_tiny(
    *, in_channels: int = 1, num_classes: int = 10, image_size: int = 8, act: str = "tanh"
) -> DPCNN:
    """4 and 8 channels of 3x3 convs, for tests and CI (works from 6px up)."""
    config = DPCNNConfig(
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=image_size,
        channels=(4, 8),
        kernels=(3, 3),
        strides=(1, 2),
        paddings=(1, 1),
        hidden=16,
        act=act,
    )
    return DPCNN(config)
