"""ViT: the Vision Transformer (Dosovitskiy et al. 2021) for small images, trained from scratch.

Patches (a strided conv) → tokens, a class token and learned positions → pre-norm
``TransformerBlock``s → final norm → the class token (or the mean of the patches) → linear head.
Images whose side is not a multiple of ``patch_size`` are zero-padded on the right and bottom;
positions learned for ``image_size`` are resized bilinearly for other sizes.

Example:
    >>> import torch
    >>> from ember.models import create
    >>> create("vit_tiny", in_channels=1, image_size=28)(torch.randn(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ember.models._zoo import register_family, register_variant
from ember.nn import TransformerBlock, make_norm


@dataclass(frozen=True)
class ViTConfig:
    """Shape of a ``ViT``."""

    in_channels: int = 3
    """Input channels C."""
    num_classes: int = 10
    """Output logits K."""
    image_size: int = 32
    """Input side the positional embedding is sized for (other sizes are interpolated)."""
    patch_size: int = 4
    """Side of each square patch (one token)."""
    embed_dim: int = 192
    """Token width D."""
    depth: int = 6
    """Transformer blocks."""
    num_heads: int = 3
    """Attention heads; must divide ``embed_dim``."""
    mlp_ratio: float = 4.0
    """MLP hidden width as a multiple of D."""
    dropout: float = 0.0
    """Dropout on attention, residual branches and before the head."""
    drop_path: float = 0.1
    """Stochastic depth of the last block (rising linearly from 0 at the first)."""
    norm: str = "layer"
    """``layer`` or ``rms``."""
    mlp: str = "gelu"
    """``gelu`` or ``swiglu``."""
    pool: str = "cls"
    """``cls`` (the class token) or ``mean`` (average of the patch tokens)."""


class ViT(nn.Module):
    """(B, C, H, W) images → (B, K) logits, with timm's ``forward_features`` / ``forward_head`` split.

    Args:
        config: the shape; see ``ViTConfig``.
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        if config.pool not in ("cls", "mean"):
            raise ValueError(f"unknown pool '{config.pool}'; expected cls or mean")
        self.config = c = config
        p = c.patch_size
        self.patch_embed = nn.Conv2d(c.in_channels, c.embed_dim, kernel_size=p, stride=p)
        self.grid = -(-c.image_size // p)  # patches per side (the image is padded up to a multiple)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        # (1, D, g, g): kept as a map so other input sizes can resize it like an image
        self.pos_embed = nn.Parameter(torch.randn(1, c.embed_dim, self.grid, self.grid) * 0.02)
        self.cls_pos = nn.Parameter(torch.randn(1, 1, c.embed_dim) * 0.02)
        self.drop = nn.Dropout(c.dropout)
        rates = torch.linspace(0, c.drop_path, c.depth).tolist() if c.depth > 1 else [c.drop_path]
        self.blocks = nn.ModuleList(
            TransformerBlock(
                c.embed_dim,
                c.num_heads,
                mlp_ratio=c.mlp_ratio,
                norm=c.norm,
                mlp=c.mlp,
                dropout=c.dropout,
                drop_path=rate,
            )
            for rate in rates
        )
        self.norm = make_norm(c.norm, c.embed_dim, dims=0)
        self.num_features = c.embed_dim
        self.head = nn.Linear(c.embed_dim, c.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, 1 + N, D) normalized tokens, the class token first
        p = self.config.patch_size
        pad_h, pad_w = -x.shape[-2] % p, -x.shape[-1] % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        patches = self.patch_embed(x)  # (B, D, h, w)
        pos: torch.Tensor = self.pos_embed
        if pos.shape[-2:] != patches.shape[-2:]:
            pos = F.interpolate(pos, size=patches.shape[-2:], mode="bilinear", align_corners=False)
        tokens = (patches + pos).flatten(2).transpose(1, 2)  # (B, N, D)
        cls = (self.cls_token + self.cls_pos).expand(x.shape[0], -1, -1)
        x = self.drop(torch.cat([cls, tokens], dim=1))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_head(self, feats: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        # (B, 1 + N, D) -> (B, D) -> (B, K)
        pooled = feats[:, 0] if self.config.pool == "cls" else feats[:, 1:].mean(dim=1)
        pooled = self.drop(pooled)
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


register_family(ViTConfig, ViT)
register_variant(
    "vit",
    ViTConfig,
    "The width of ViT-Ti (192, 3 heads) at 6 blocks on 4x4 patches: sized for 28-32 pixel images",
)
register_variant(
    "vit_tiny",
    ViTConfig,
    "One 2-head block, 16 wide, for tests and CI",
    embed_dim=16,
    depth=1,
    num_heads=2,
    mlp_ratio=2.0,
    drop_path=0.0,
)


__all__ = ["ViT", "ViTConfig"]
