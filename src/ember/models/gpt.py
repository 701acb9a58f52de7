"""GPT: a decoder-only transformer language model (GPT-2 / nanoGPT layout), with a KV cache.

Token embedding (+ learned or sinusoidal positions, or RoPE inside attention) → causal pre-norm
``TransformerBlock``s → final norm → logits read out through the tied token embedding. Weights start
as GPT-2's: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * layers).

``forward(ids, cache=...)`` with a `KVCache` (``new_cache``) runs only the new positions; ``generate``
decodes with `ember.generative.sampling` (temperature, top-k, top-p, repetition penalty).

Example:
    >>> import torch
    >>> from ember.models import create
    >>> model = create("gpt_tiny", vocab_size=65)
    >>> model(torch.randint(0, 65, (2, 16))).shape
    torch.Size([2, 16, 65])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ember.models._zoo import register_model
from ember.nn import KVCache, TokenEmbedding, TransformerBlock, make_norm, make_positional


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a ``GPT``."""

    vocab_size: int = 256
    """Tokens V (filled from the tokenizer by a recipe)."""
    block_size: int = 256
    """Longest context in tokens (filled from ``data.block_size`` by a recipe)."""
    num_layers: int = 4
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads per block; must divide ``embed_dim``."""
    embed_dim: int = 256
    """Width C of the residual stream."""
    mlp_ratio: float = 4.0
    """MLP hidden width as a multiple of C."""
    dropout: float = 0.0
    """Dropout on embeddings, attention weights and residual branches while training."""
    bias: bool = True
    """Biases on linear layers (and LayerNorm)."""
    norm: str = "layer"
    """Block norm: ``layer`` (LayerNorm) or ``rms`` (RMSNorm)."""
    mlp: str = "gelu"
    """Block MLP: ``gelu`` or ``swiglu``."""
    pos_embed: str = "learned"
    """Positions: ``learned``, ``sinusoidal``, ``rope`` (rotary, inside attention) or ``none``."""
    tie_weights: bool = True
    """Read logits out through the token embedding (one matrix) instead of a separate head."""


class GPT(nn.Module):
    """Decoder-only transformer LM: (B, T) token ids → (B, T, V) next-token logits.

    Args:
        config: the shape; see ``GPTConfig``.

    Example:
        >>> model = GPT(GPTConfig(vocab_size=10, block_size=8, num_layers=1, num_heads=2, embed_dim=16))
        >>> model(torch.zeros(1, 8, dtype=torch.long)).shape
        torch.Size([1, 8, 10])
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.block_size = c.block_size
        self.tok_emb = TokenEmbedding(c.vocab_size, c.embed_dim)
        self.pos_emb = make_positional(c.pos_embed, max_len=c.block_size, dim=c.embed_dim)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                c.embed_dim,
                c.num_heads,
                mlp_ratio=c.mlp_ratio,
                norm=c.norm,
                mlp=c.mlp,
                causal=True,
                dropout=c.dropout,
                bias=c.bias,
                rope=c.pos_embed == "rope",
                max_len=c.block_size,
            )
            for _ in range(c.num_layers)
        )
        self.norm = make_norm(c.norm, c.embed_dim, dims=0)
        self.head = None if c.tie_weights else nn.Linear(c.embed_dim, c.vocab_size, bias=False)
        self.apply(_init_weights)
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.proj.weight")):  # GPT-2's residual scaling
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.num_layers))

    def new_cache(self, batch_size: int = 1) -> KVCache:
        """An empty KV cache for ``generate``-style decoding of up to ``block_size`` positions."""
        return KVCache(len(self.blocks), self.block_size)

    def forward_features(self, ids: torch.Tensor, *, cache: KVCache | None = None) -> torch.Tensor:
        """(B, T) ids → (B, T, C) final hidden states (after the last norm)."""
        past = cache.length if cache is not None else 0
        if past + ids.shape[1] > self.block_size:
            raise ValueError(
                f"{past + ids.shape[1]} positions given; this GPT's block_size is {self.block_size}. "
                "Crop the context (generate does) or build the model with a larger block_size."
            )
        x = self.tok_emb(ids)  # (B, T, C)
        if self.pos_emb is not None:
            x = self.pos_emb(x, past)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, cache=cache.layers[i] if cache is not None else None)
        return self.norm(x)

    def forward(self, ids: torch.Tensor, *, cache: KVCache | None = None) -> torch.Tensor:
        # (B, T) -> (B, T, V)
        x = self.forward_features(ids, cache=cache)
        return self.head(x) if self.head is not None else self.tok_emb.attend(x)

    def generate(self, ids: torch.Tensor, max_new_tokens: int, **options: Any) -> torch.Tensor:
        """(B, T) prompt → (B, T + n) continued ids; options as `ember.generative.generate_tokens`.

        Example:
            >>> model = GPT(GPTConfig(vocab_size=10, block_size=8, num_layers=1, num_heads=2, embed_dim=16))
            >>> model.generate(torch.zeros(1, 2, dtype=torch.long), 3, greedy=True).shape
            torch.Size([1, 5])
        """
        from ember.generative.sampling import generate  # torch-only; imported here to keep layers apart

        return generate(self, ids, max_new_tokens=max_new_tokens, **options)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


@register_model("gpt")
def gpt(
    *,
    vocab_size: int = 256,
    block_size: int = 256,
    num_layers: int = 4,
    num_heads: int = 4,
    embed_dim: int = 256,
    mlp_ratio: float = 4.0,
    dropout: float = 0.0,
    bias: bool = True,
    norm: str = "layer",
    mlp: str = "gelu",
    pos_embed: str = "learned",
    tie_weights: bool = True,
) -> GPT:
    """4 layers, 4 heads, 256 wide (3.2 M weights besides embeddings): a char-level LM for a CPU."""
    return GPT(GPTConfig(**locals()))


@register_model("gpt_small")
def gpt_small(
    *,
    vocab_size: int = 50304,
    block_size: int = 1024,
    num_layers: int = 12,
    num_heads: int = 12,
    embed_dim: int = 768,
    mlp_ratio: float = 4.0,
    dropout: float = 0.0,
    bias: bool = True,
    norm: str = "layer",
    mlp: str = "gelu",
    pos_embed: str = "learned",
    tie_weights: bool = True,
) -> GPT:
    """GPT-2 small's shape (124 M weights with its 50k vocabulary)."""
    return GPT(GPTConfig(**locals()))


@register_model("gpt_tiny")
def gpt_tiny(
    *,
    vocab_size: int = 64,
    block_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    embed_dim: int = 32,
    mlp_ratio: float = 4.0,
    dropout: float = 0.0,
    bias: bool = True,
    norm: str = "layer",
    mlp: str = "gelu",
    pos_embed: str = "learned",
    tie_weights: bool = True,
) -> GPT:
    """2 layers, 2 heads, 32 wide, context 32: for tests and CI."""
    return GPT(GPTConfig(**locals()))


__all__ = ["GPT", "GPTConfig", "gpt", "gpt_small", "gpt_tiny"]
