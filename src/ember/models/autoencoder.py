"""Convolutional autoencoders: a plain one and a variational one (Kingma & Welling, 2014).

The encoder halves the image twice with 4x4 stride-2 convolutions (28 → 14 → 7) and a linear layer
gives the latent code; the decoder mirrors it with transposed convolutions and returns per-pixel
*logits* (the task reads them as Bernoulli means through a sigmoid). A VAE's encoder gives the mean
and log-variance of a diagonal Gaussian q(z | x); ``forward`` samples z from it
(reparameterized), a plain autoencoder's uses its code as is.

Sides must divide by 4 (28, 32, 8 ...).

Example:
    >>> import torch
    >>> from ember.models import create
    >>> vae = create("vae_tiny", in_channels=1, image_size=8)
    >>> out = vae(torch.rand(2, 1, 8, 8))
    >>> out.logits.shape, out.mean.shape
    (torch.Size([2, 1, 8, 8]), torch.Size([2, 4]))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from ember.models._zoo import register_family, register_variant
from ember.nn import get_activation

__all__ = ["AutoEncoder", "AutoEncoderConfig", "AutoEncoderOutput"]


@dataclass(frozen=True)
class AutoEncoderConfig:
    """Shape of an ``AutoEncoder``."""

    in_channels: int = 1
    """Image channels C."""
    image_size: int = 28
    """Image side; must divide by 4."""
    latent_dim: int = 16
    """Size of the latent code z."""
    width: int = 32
    """Channels after the first stride-2 convolution (doubled after the second)."""
    hidden: int = 256
    """Width of the linear layer between the feature map and the code (each way)."""
    variational: bool = True
    """A VAE (Gaussian q(z | x), sampled in forward) or a plain autoencoder."""
    act: str = "silu"
    """Activation, a ``get_activation`` name."""


class AutoEncoderOutput(NamedTuple):
    """What ``AutoEncoder.forward`` returns."""

    logits: torch.Tensor
    """(B, C, H, W) reconstruction logits."""
    mean: torch.Tensor
    """(B, Z) the code (a VAE: the mean of q(z | x))."""
    logvar: torch.Tensor | None
    """(B, Z) log-variance of q(z | x); None for a plain autoencoder."""


class AutoEncoder(nn.Module):
    """(B, C, H, W) images in [0, 1] → reconstruction logits and the latent code.

    Args:
        config: the shape; see ``AutoEncoderConfig``.
    """

    def __init__(self, config: AutoEncoderConfig) -> None:
        super().__init__()
        self.config = c = config
        if c.image_size % 4:
            raise ValueError(f"image_size must divide by 4 (two stride-2 stages); got {c.image_size}")
        side = c.image_size // 4
        flat = 2 * c.width * side * side
        self.encoder = nn.Sequential(
            nn.Conv2d(c.in_channels, c.width, 4, stride=2, padding=1),
            get_activation(c.act),
            nn.Conv2d(c.width, 2 * c.width, 4, stride=2, padding=1),
            get_activation(c.act),
            nn.Flatten(),
            nn.Linear(flat, c.hidden),
            get_activation(c.act),
            nn.Linear(c.hidden, 2 * c.latent_dim if c.variational else c.latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(c.latent_dim, c.hidden),
            get_activation(c.act),
            nn.Linear(c.hidden, flat),
            get_activation(c.act),
            nn.Unflatten(1, (2 * c.width, side, side)),
            nn.ConvTranspose2d(2 * c.width, c.width, 4, stride=2, padding=1),
            get_activation(c.act),
            nn.ConvTranspose2d(c.width, c.in_channels, 4, stride=2, padding=1),
        )

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def variational(self) -> bool:
        return self.config.variational

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, C, H, W) → the code (B, Z) and, for a VAE, its log-variance (B, Z)."""
        h = self.encoder(x)
        if not self.config.variational:
            return h, None
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, Z) codes → (B, C, H, W) logits."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> AutoEncoderOutput:
        mean, logvar = self.encode(x)
        z = mean if logvar is None else mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        return AutoEncoderOutput(self.decode(z), mean, logvar)


register_family(AutoEncoderConfig, AutoEncoder)
register_variant("vae", AutoEncoderConfig, "A convolutional VAE with a 16-dimensional Gaussian latent")
register_variant(
    "vae_tiny",
    AutoEncoderConfig,
    "A 4-dimensional-latent VAE of 4 and 8 channels, for tests and CI",
    latent_dim=4,
    width=4,
    hidden=16,
)
register_variant(
    "autoencoder",
    AutoEncoderConfig,
    "The VAE's network as a plain (deterministic) autoencoder",
    variational=False,
)
register_variant(
    "autoencoder_tiny",
    AutoEncoderConfig,
    "A plain autoencoder of 4 and 8 channels, for tests and CI",
    latent_dim=4,
    width=4,
    hidden=16,
    variational=False,
)
