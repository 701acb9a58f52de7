"""A transformer encoder text classifier (BERT-style, trained from scratch).

Token embedding + positions → bidirectional pre-norm ``TransformerBlock``s that ignore padding →
final norm → mean over real tokens (or the first token) → linear head. Takes ``(ids, label)``
batches of right-padded ids (``pad_id``) as the classification task gives them.

Example:
    >>> import torch
    >>> from ember.models import create
    >>> model = create("transformer_encoder_tiny", vocab_size=40, num_classes=4)
    >>> model(torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0]])).shape
    torch.Size([2, 4])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ember.models._zoo import register_family, register_variant
from ember.nn import TokenEmbedding, TransformerBlock, make_norm, make_positional


@dataclass(frozen=True)
class TransformerEncoderConfig:
    """Shape of a ``TransformerEncoderClassifier``."""

    vocab_size: int = 10_000
    """Tokens V (filled from the tokenizer by a recipe)."""
    num_classes: int = 2
    """Output logits K."""
    max_len: int = 512
    """Longest input in tokens."""
    num_layers: int = 4
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads; must divide ``embed_dim``."""
    embed_dim: int = 256
    """Width C."""
    mlp_ratio: float = 4.0
    """MLP hidden width as a multiple of C."""
    dropout: float = 0.1
    """Dropout on embeddings, attention and residual branches, and before the head."""
    norm: str = "layer"
    """``layer`` or ``rms``."""
    mlp: str = "gelu"
    """``gelu`` or ``swiglu``."""
    pos_embed: str = "learned"
    """``learned``, ``sinusoidal``, ``rope`` or ``none``."""
    pool: str = "mean"
    """``mean`` over real tokens, or ``first`` (put a [CLS]-like token first)."""
    pad_id: int = 0
    """Token id of padding."""


class TransformerEncoderClassifier(nn.Module):
    """(B, T) right-padded token ids → (B, K) logits.

    Args:
        config: the shape; see ``TransformerEncoderConfig``.
    """

    def __init__(self, config: TransformerEncoderConfig) -> None:
        super().__init__()
        if config.pool not in ("mean", "first"):
            raise ValueError(f"unknown pool '{config.pool}'; expected mean or first")
        self.config = c = config
        self.embed = TokenEmbedding(c.vocab_size, c.embed_dim, padding_idx=c.pad_id)
        self.pos_emb = make_positional(c.pos_embed, max_len=c.max_len, dim=c.embed_dim)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                c.embed_dim,
                c.num_heads,
                mlp_ratio=c.mlp_ratio,
                norm=c.norm,
                mlp=c.mlp,
                dropout=c.dropout,
                rope=c.pos_embed == "rope",
                max_len=c.max_len,
            )
            for _ in range(c.num_layers)
        )
        self.norm = make_norm(c.norm, c.embed_dim, dims=0)
        self.num_features = c.embed_dim
        self.head = nn.Linear(c.embed_dim, c.num_classes)

    def forward_features(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids (and optional (B, T) mask, True on tokens) → (B, C) pooled features."""
        if mask is None:
            mask = ids != self.config.pad_id
        # a row of padding only would leave attention nothing to attend to: let it see itself whole
        mask = mask | ~mask.any(dim=1, keepdim=True)
        x = self.embed(ids)
        if self.pos_emb is not None:
            x = self.pos_emb(x)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, mask=mask)
        x = self.norm(x)  # (B, T, C)
        if self.config.pool == "first":
            return x[:, 0]
        weights = mask[..., None].to(x.dtype)
        return (x * weights).sum(dim=1) / weights.sum(dim=1)

    def forward_head(self, feats: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        # (B, C) -> (B, K)
        feats = self.drop(feats)
        return feats if pre_logits else self.head(feats)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(ids, mask))


register_family(TransformerEncoderConfig, TransformerEncoderClassifier)
register_variant(
    "transformer_encoder", TransformerEncoderConfig, "4 blocks, 4 heads, 256 wide, inputs up to 512 tokens"
)
register_variant(
    "transformer_encoder_tiny",
    TransformerEncoderConfig,
    "One 2-head block, 16 wide, for tests and CI",
    vocab_size=64,
    max_len=64,
    num_layers=1,
    num_heads=2,
    embed_dim=16,
    mlp_ratio=2.0,
    dropout=0.0,
)


__all__ = [
    "TransformerEncoderClassifier",
    "TransformerEncoderConfig",
]
