"""DCGAN (Radford et al., 2016): a generator and a discriminator in one module, plus the
generator's moving average.

The generator maps a latent z ~ N(0, I) through a linear layer to a (4w, s/4, s/4) map and two 4x4
stride-2 transposed convolutions (BatchNorm and ReLU between) to a (C, s, s) image in [-1, 1]
(tanh). The discriminator mirrors it with stride-2 convolutions and LeakyReLU to one logit per
image; with ``spectral_norm`` each of its layers is divided by its largest singular value
(Miyato et al., 2018), the usual replacement for its BatchNorm.

``generator_ema`` holds the exponential moving average of the generator's weights (Karras et al.,
2018; Yazıcı et al., 2019), updated by the GAN task after each generator step; ``forward(z)`` (what
sampling and serving run) uses it when present.

Example:
    >>> import torch
    >>> from ember.models import create
    >>> gan = create("dcgan_tiny", in_channels=1, image_size=8)
    >>> images = gan(torch.randn(2, gan.latent_dim))
    >>> images.shape, gan.discriminator(images).shape
    (torch.Size([2, 1, 8, 8]), torch.Size([2]))
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from ember.models._zoo import register_family, register_variant
from ember.nn.ema import ema_decay, update_ema

__all__ = ["DCGAN", "DCGANConfig", "Discriminator", "Generator"]


@dataclass(frozen=True)
class DCGANConfig:
    """Shape of a ``DCGAN``."""

    in_channels: int = 1
    """Image channels C."""
    image_size: int = 28
    """Image side s; must divide by 4."""
    latent_dim: int = 64
    """Size of the latent z."""
    width: int = 32
    """Base channels w: the generator runs 4w → 2w → w, the discriminator w → 2w."""
    spectral_norm: bool = True
    """Spectral normalization on every discriminator layer (then no BatchNorm there)."""
    ema_decay: float = 0.999
    """Decay of the generator's moving average (0: none; sample the generator itself)."""


class Generator(nn.Module):
    """(B, Z) latents → (B, C, s, s) images in [-1, 1]."""

    def __init__(self, c: DCGANConfig) -> None:
        super().__init__()
        side, w = c.image_size // 4, c.width
        self.net = nn.Sequential(
            nn.Linear(c.latent_dim, 4 * w * side * side, bias=False),
            nn.Unflatten(1, (4 * w, side, side)),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.Conv2d(w, c.in_channels, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def _unchanged(module: nn.Module) -> nn.Module:
    return module


class Discriminator(nn.Module):
    """(B, C, s, s) images in [-1, 1] → (B,) logits (real > 0)."""

    def __init__(self, c: DCGANConfig) -> None:
        super().__init__()
        side, w = c.image_size // 4, c.width
        sn: Callable[[nn.Module], nn.Module] = _spectral_norm if c.spectral_norm else _unchanged
        self.net = nn.Sequential(
            sn(nn.Conv2d(c.in_channels, w, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            sn(nn.Conv2d(w, 2 * w, 4, stride=2, padding=1)),
            nn.Identity() if c.spectral_norm else nn.BatchNorm2d(2 * w),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            sn(nn.Linear(2 * w * side * side, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class DCGAN(nn.Module):
    """``generator``, ``discriminator`` and ``generator_ema``; ``forward(z)`` generates images.

    Args:
        config: the shape; see ``DCGANConfig``.
    """

    ema_updates: torch.Tensor

    def __init__(self, config: DCGANConfig) -> None:
        super().__init__()
        self.config = c = config
        if c.image_size % 4:
            raise ValueError(f"image_size must divide by 4 (two stride-2 stages); got {c.image_size}")
        self.generator = Generator(c)
        self.discriminator = Discriminator(c)
        for module in self.modules():  # DCGAN's initialization: N(0, 0.02) weights
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
                weight = getattr(module, "parametrizations", None)
                target = weight.weight.original if weight is not None else module.weight
                nn.init.normal_(target, 0.0, 0.02)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False) if c.ema_decay > 0 else None
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def sampler(self) -> Generator:
        """The generator to sample with: the moving average when there is one."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # (B, Z) -> (B, C, s, s) in [-1, 1]
        return self.sampler()(z)

    def update_ema(self) -> None:
        """Move ``generator_ema`` towards ``generator`` (the decay warms up over the first updates)."""
        if self.generator_ema is None:
            return
        update_ema(
            self.generator_ema, self.generator, ema_decay(self.config.ema_decay, int(self.ema_updates))
        )
        self.ema_updates += 1


register_family(DCGANConfig, DCGAN)
register_variant(
    "dcgan", DCGANConfig, "Generator 128/64/32 channels, spectrally normalized discriminator 32/64"
)
register_variant(
    "dcgan_tiny",
    DCGANConfig,
    "A DCGAN of 4-16 channels and an 8-dimensional latent, for tests and CI",
    latent_dim=8,
    width=4,
    ema_decay=0.9,
)
