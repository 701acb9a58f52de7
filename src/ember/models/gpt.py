"""GPT: a decoder-only transformer language model (GPT-2 / nanoGPT layout), with a KV cache.

Token embedding (+ learned or sinusoidal positions, or RoPE inside attention) → causal pre-norm
``TransformerBlock``s → final norm → logits read out through the tied token embedding. Weights start
as GPT-2's: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * layers).

``forward(ids, cache=...)`` with a `KVCache` (``new_cache``) runs only the new positions; ``generate``
decodes with `ember.decoding.sampling` (temperature, top-k, top-p, repetition penalty).

``GPTClassifier`` is the same trunk under the same parameter names (``tok_emb``, ``pos_emb``,
``blocks``, ``norm``) with a classification ``head`` on one pooled state: the last real token's
(``pool="last"``) or the mean over real tokens. So a pretrained GPT's weights load into it by name
(`ember.train.finetune.load_pretrained`) and only the head starts from scratch. Inputs are right-padded
with ``pad_id``: attention is causal, so no real token ever sees the padding after it.

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

from ember.decoding import sampling
from ember.models._zoo import register_family, register_variant
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


@dataclass(frozen=True)
class GPTClassifierConfig(GPTConfig):
    """Shape of a ``GPTClassifier``: a ``GPTConfig`` trunk (``tie_weights`` unused) plus its head."""

    num_classes: int = 2
    """Output logits K (filled from the data by a recipe)."""
    pool: str = "last"
    """The state the head reads: ``last`` real token's, or the ``mean`` over real tokens."""
    pad_id: int = 0
    """Token id of padding (filled from the tokenizer by a recipe)."""


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
        self.config = c = config
        self.block_size = c.block_size
        self.tok_emb, self.pos_emb, self.drop, self.blocks, self.norm = _trunk(c)
        self.head = None if c.tie_weights else nn.Linear(c.embed_dim, c.vocab_size, bias=False)
        _init_gpt(self, c)

    def new_cache(self, batch_size: int = 1) -> KVCache:
        """An empty KV cache for ``generate``-style decoding of up to ``block_size`` positions."""
        return KVCache(len(self.blocks), self.block_size)

    def flops_per_token(self, context: int) -> float:
        """Training FLOPs per token at ``context`` tokens: nanoGPT's ``6 N + 12 L H Q T`` (N without the
        position table: a lookup, not a matmul)."""
        c = self.config
        table = getattr(self.pos_emb, "weight", None)
        n = sum(p.numel() for p in self.parameters()) - (table.numel() if table is not None else 0)
        return 6.0 * n + 12.0 * c.num_layers * c.embed_dim * context

    def forward_features(self, ids: torch.Tensor, *, cache: KVCache | None = None) -> torch.Tensor:
        """(B, T) ids → (B, T, C) final hidden states (after the last norm)."""
        return _run_trunk(self, ids, cache)

    def forward(self, ids: torch.Tensor, *, cache: KVCache | None = None) -> torch.Tensor:
        # (B, T) -> (B, T, V)
        x = self.forward_features(ids, cache=cache)
        return self.head(x) if self.head is not None else self.tok_emb.attend(x)

    def generate(self, ids: torch.Tensor, max_new_tokens: int, **options: Any) -> torch.Tensor:
        """(B, T) prompt → (B, T + n) continued ids; options as `ember.decoding.generate_tokens`.

        Example:
            >>> model = GPT(GPTConfig(vocab_size=10, block_size=8, num_layers=1, num_heads=2, embed_dim=16))
            >>> model.generate(torch.zeros(1, 2, dtype=torch.long), 3, greedy=True).shape
            torch.Size([1, 5])
        """
        return sampling.generate(self, ids, max_new_tokens=max_new_tokens, **options)


class GPTClassifier(nn.Module):
    """A GPT trunk + a classification head: (B, T) right-padded ids → (B, K) logits.

    Args:
        config: the shape; see ``GPTClassifierConfig``.

    Example:
        >>> model = GPTClassifier(GPTClassifierConfig(vocab_size=10, block_size=8, num_layers=1,
        ...                                           num_heads=2, embed_dim=16, num_classes=3))
        >>> model(torch.tensor([[4, 5, 6, 0], [7, 0, 0, 0]])).shape
        torch.Size([2, 3])
    """

    def __init__(self, config: GPTClassifierConfig) -> None:
        super().__init__()
        if config.pool not in ("last", "mean"):
            raise ValueError(f"unknown pool '{config.pool}'; expected last or mean")
        self.config = c = config
        self.block_size = c.block_size
        self.tok_emb, self.pos_emb, self.drop, self.blocks, self.norm = _trunk(c)
        self.num_features = c.embed_dim
        self.head_drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.embed_dim, c.num_classes)
        _init_gpt(self, c)

    def forward_features(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids (and optional (B, T) mask, True on real tokens) → (B, C) pooled features."""
        if mask is None:
            mask = ids != self.config.pad_id
        x = _run_trunk(self, ids, None)  # (B, T, C)
        if self.config.pool == "last":
            # the last True of each row (a row of padding only falls back to position 0)
            last = mask.shape[1] - 1 - mask.flip(1).to(torch.int8).argmax(dim=1)
            return x[torch.arange(x.shape[0], device=x.device), last]
        weights = mask[..., None].to(x.dtype)
        return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def forward_head(self, feats: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        # (B, C) -> (B, K)
        feats = self.head_drop(feats)
        return feats if pre_logits else self.head(feats)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(ids, mask))


def _trunk(c: GPTConfig) -> tuple[TokenEmbedding, nn.Module | None, nn.Dropout, nn.ModuleList, nn.Module]:
    """The layers both GPT models share (token and position embeddings, dropout, blocks, final norm)."""
    blocks = nn.ModuleList(
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
    return (
        TokenEmbedding(c.vocab_size, c.embed_dim),
        make_positional(c.pos_embed, max_len=c.block_size, dim=c.embed_dim),
        nn.Dropout(c.dropout),
        blocks,
        make_norm(c.norm, c.embed_dim, dims=0),
    )


def _init_gpt(model: nn.Module, c: GPTConfig) -> None:
    model.apply(_init_weights)
    for name, p in model.named_parameters():
        if name.endswith(("attn.proj.weight", "mlp.proj.weight")):  # GPT-2's residual scaling
            nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.num_layers))


def _run_trunk(model: GPT | GPTClassifier, ids: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
    # (B, T) -> (B, T, C), after the final norm
    past = cache.length if cache is not None else 0
    if past + ids.shape[1] > model.block_size:
        raise ValueError(
            f"{past + ids.shape[1]} positions given; this GPT's block_size is {model.block_size}. "
            "Crop the context (generate does) or build the model with a larger block_size."
        )
    x = model.tok_emb(ids)  # (B, T, C)
    if model.pos_emb is not None:
        x = model.pos_emb(x, past)
    x = model.drop(x)
    for i, block in enumerate(model.blocks):
        x = block(x, cache=cache.layers[i] if cache is not None else None)
    return model.norm(x)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


register_family(GPTConfig, GPT)
register_variant(
    "gpt",
    GPTConfig,
    "4 layers, 4 heads, 256 wide (3.2 M weights besides embeddings): a char-level LM for a CPU",
)
register_variant(
    "gpt_small",
    GPTConfig,
    "GPT-2 small's shape (124 M weights with its 50k vocabulary)",
    vocab_size=50304,
    block_size=1024,
    num_layers=12,
    num_heads=12,
    embed_dim=768,
)
register_variant(
    "gpt_tiny",
    GPTConfig,
    "2 layers, 2 heads, 32 wide, context 32: for tests and CI",
    vocab_size=64,
    block_size=32,
    num_layers=2,
    num_heads=2,
    embed_dim=32,
)

register_family(GPTClassifierConfig, GPTClassifier, unused=("tie_weights",))
register_variant(
    "gpt_classifier",
    GPTClassifierConfig,
    "gpt's trunk with a classification head: fine-tune a gpt run into a text classifier",
)
register_variant(
    "gpt_classifier_tiny",
    GPTClassifierConfig,
    "gpt_tiny's trunk with a classification head, for tests and CI",
    vocab_size=64,
    block_size=32,
    num_layers=2,
    num_heads=2,
    embed_dim=32,
)


__all__ = [
    "GPT",
    "GPTClassifier",
    "GPTClassifierConfig",
    "GPTConfig",
]
