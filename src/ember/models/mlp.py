"""MLP: flatten the image (or take feature vectors) → hidden layers → linear head.

Example:
    >>> import torch
    >>> from ember.models import create
    >>> create("mlp_tiny", in_channels=1, image_size=8)(torch.randn(4, 1, 8, 8)).shape
    torch.Size([4, 10])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ember.models._zoo import register_family, register_variant
from ember.nn import get_activation, make_norm


@dataclass(frozen=True)
class MLPConfig:
    """Shape of an ``MLP``."""

    in_channels: int = 3
    """Input channels C; with ``image_size`` gives in_features = C * S * S."""
    num_classes: int = 10
    """Output logits K."""
    image_size: int = 32
    """Input side S (square images). Use ``image_size=1`` for (B, F) feature vectors with F = C."""
    width: int = 256
    """Units in each hidden layer."""
    depth: int = 2
    """Number of hidden layers (0 gives a linear model)."""
    dropout: float = 0.0
    """Dropout after each hidden activation."""
    norm: str = "none"
    """Norm after each hidden linear layer: "none", "batch" or "layer"."""
    act: str = "relu"
    """Hidden activation, a ``get_activation`` name."""


class MLP(nn.Module):
    """Multi-layer perceptron over flattened inputs: [linear → norm → act → dropout] x depth → linear.

    Args:
        config: the shape; see ``MLPConfig``.

    Example:
        >>> MLP(MLPConfig(in_channels=4, image_size=1, width=8))(torch.randn(2, 4)).shape
        torch.Size([2, 10])
    """

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        layers: list[nn.Module] = []
        features = self.in_features = c.in_channels * c.image_size * c.image_size
        for _ in range(c.depth):
            layers += [
                nn.Linear(features, c.width, bias=c.norm == "none"),
                make_norm(c.norm, c.width, dims=0),
                get_activation(c.act),
                nn.Dropout(c.dropout),
            ]
            features = c.width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(features, c.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) or (B, F) -> (B, width)
        x = x.flatten(1)
        c = self.config
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"MLP expects {self.in_features} input features (in_channels={c.in_channels} x "
                f"image_size={c.image_size}^2), got {x.shape[1]} from input shape {tuple(x.shape)}; "
                "build it with the data's in_channels and image_size"
            )
        return self.body(x)

    def forward_head(self, feats: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        # (B, width) -> (B, K)
        return feats if pre_logits else self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, K)
        return self.forward_head(self.forward_features(x))


register_family(MLPConfig, MLP)
register_variant("mlp", MLPConfig, "MLP with two hidden layers of 256 units")
register_variant(
    "mlp_tiny", MLPConfig, "A one-hidden-layer, 16-unit MLP for tests and CI", width=16, depth=1, norm="layer"
)
