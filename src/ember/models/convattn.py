"""ConvAttn: a conv-attention hybrid. Conv stages shrink the image; transformer blocks mix the tokens.

The conv stages (residual blocks) build local features cheaply at high resolution; the last feature
map's pixels become tokens for a few pre-norm self-attention blocks, then a mean-pool and a linear
head. Learned positional embeddings are sized for ``image_size`` and resized bilinearly for others.

Example:
    >>> import torch
    >>> from ember.models import create
    >>> create("convattn_tiny", in_channels=1, image_size=28)(torch.randn(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ember.models._zoo import register_family, register_variant
from ember.nn import ConvBlock, MultiHeadSelfAttention, ResidualBlock, get_activation


@dataclass(frozen=True)
class ConvAttnConfig:
    """Shape of a ``ConvAttn``."""

    in_channels: int = 3
    """Input channels C."""
    num_classes: int = 10
    """Output logits K."""
    image_size: int = 32
    """Input side the positional embedding is sized for (other sizes are interpolated)."""
    width: int = 32
    """Channels of the stem and first conv stage; each later stage doubles them."""
    depths: tuple[int, ...] = (1, 1, 1)
    """Residual blocks per conv stage; every stage after the first halves the resolution."""
    attn_depth: int = 2
    """Transformer blocks over the tokens; their width is the last stage's channels."""
    num_heads: int = 4
    """Attention heads; must divide the token width ``width * 2 ** (len(depths) - 1)``."""
    mlp_ratio: int = 2
    """Hidden width of each transformer block's MLP, as a multiple of the token width."""
    pos_embed: bool = True
    """Add a learned positional embedding to the tokens (False: rely on the conv features alone)."""
    dropout: float = 0.0
    """Dropout on attention weights, in the token MLPs and before the head."""
    norm: str = "batch"
    """Norm of the conv stages, a ``make_norm`` name (the token blocks always use LayerNorm)."""
    act: str = "gelu"
    """Activation of the conv stages and token MLPs, a ``get_activation`` name."""


class TokenBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))`` over (B, N, D) tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, dropout: float, act: str) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, num_heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim * mlp_ratio),
            get_activation(act),
            nn.Dropout(dropout),
            nn.Linear(dim * mlp_ratio, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, N, D) -> (B, N, D)
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ConvAttn(nn.Module):
    """Stem → residual conv stages → tokens (+ position) → ``TokenBlock``s → mean-pool → linear.

    Args:
        config: the shape; see ``ConvAttnConfig``.

    Example:
        >>> cfg = ConvAttnConfig(width=8, depths=(1, 1), attn_depth=1, num_heads=2)
        >>> ConvAttn(cfg)(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, config: ConvAttnConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.stem = ConvBlock(c.in_channels, c.width, 3, norm=c.norm, act=c.act)
        stages: list[nn.Module] = []
        ch, side = c.width, c.image_size
        for i, depth in enumerate(c.depths):
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                side = (side + stride - 1) // stride  # a padded 3x3 conv of stride s gives ceil(side / s)
                stages.append(ResidualBlock(ch, c.width * 2**i, stride, norm=c.norm, act=c.act))
                ch = c.width * 2**i
        self.stages = nn.Sequential(*stages)
        self.num_features = ch
        # (1, D, h, w): kept as a map so other input sizes can resize it like an image
        self.pos_embed = nn.Parameter(torch.randn(1, ch, side, side) * 0.02) if c.pos_embed else None
        self.blocks = nn.Sequential(
            *(TokenBlock(ch, c.num_heads, c.mlp_ratio, c.dropout, c.act) for _ in range(c.attn_depth))
        )
        self.norm = nn.LayerNorm(ch)
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(ch, c.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, D, h, w) -> (B, N = h * w, D) tokens
        feats = self.stages(self.stem(x))
        if self.pos_embed is not None:
            pos: torch.Tensor = self.pos_embed
            if pos.shape[-2:] != feats.shape[-2:]:
                pos = F.interpolate(pos, size=feats.shape[-2:], mode="bilinear", align_corners=False)
            feats = feats + pos
        return self.norm(self.blocks(feats.flatten(2).transpose(1, 2)))

    def forward_head(self, feats: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        # (B, N, D) -> (B, D) pooled -> (B, K)
        pooled = self.dropout(feats.mean(dim=1))
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, K)
        return self.forward_head(self.forward_features(x))


register_family(ConvAttnConfig, ConvAttn)
register_variant(
    "convattn",
    ConvAttnConfig,
    "Conv stages of 32, 64, 128 channels, then two 4-head blocks over 128-wide tokens",
)
register_variant(
    "convattn_tiny",
    ConvAttnConfig,
    "Conv stages of 8 and 16 channels and one 2-head token block, for tests and CI",
    width=8,
    depths=(1, 1),
    attn_depth=1,
    num_heads=2,
)
