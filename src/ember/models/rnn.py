"""Recurrent text models: an LSTM/GRU sequence classifier and an LSTM/GRU language model.

``RNNClassifier``: token embedding → (bi)directional `Recurrent` over the real tokens only (packed;
right padding with ``pad_id``) → pooled (last state, mean or max) → linear head. It takes the
``(ids, label)`` batches of the classification task directly.

``RNNLanguageModel``: token embedding → `Recurrent` → logits through the tied embedding (projected
when ``hidden_size != embed_dim``). Decoding carries the recurrent state in an `RNNCache`, so
``generate`` costs one step per token and the context is unbounded.

Example:
    >>> import torch
    >>> from ember.models import create
    >>> clf = create("rnn_classifier_tiny", vocab_size=30, num_classes=3)
    >>> clf(torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])).shape
    torch.Size([2, 3])
    >>> create("rnn_lm_tiny", vocab_size=30)(torch.randint(1, 30, (2, 5))).shape
    torch.Size([2, 5, 30])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ember.decoding import sampling
from ember.models._zoo import register_family, register_variant
from ember.nn import Recurrent, TokenEmbedding
from ember.nn.recurrent import State


@dataclass(frozen=True)
class RNNClassifierConfig:
    """Shape of an ``RNNClassifier``."""

    vocab_size: int = 10_000
    """Tokens V (filled from the tokenizer by a recipe)."""
    num_classes: int = 2
    """Output logits K."""
    embed_dim: int = 128
    """Token embedding width."""
    hidden_size: int = 128
    """Hidden units per direction."""
    cell: str = "lstm"
    """``lstm`` or ``gru``."""
    num_layers: int = 1
    """Stacked recurrent layers."""
    bidirectional: bool = True
    """Read the text both ways."""
    dropout: float = 0.0
    """Dropout on embeddings, between layers and before the head."""
    pool: str = "last"
    """Sequence summary: ``last`` (final states), ``mean`` or ``max`` over real tokens."""
    pad_id: int = 0
    """Token id of padding (ids equal to it after the text are ignored)."""


class RNNClassifier(nn.Module):
    """(B, T) right-padded token ids → (B, K) logits.

    Args:
        config: the shape; see ``RNNClassifierConfig``.
    """

    def __init__(self, config: RNNClassifierConfig) -> None:
        super().__init__()
        if config.pool not in ("last", "mean", "max"):
            raise ValueError(f"unknown pool '{config.pool}'; expected last, mean or max")
        self.config = c = config
        self.embed = TokenEmbedding(c.vocab_size, c.embed_dim, padding_idx=c.pad_id)
        self.rnn = Recurrent(
            c.embed_dim,
            c.hidden_size,
            cell=c.cell,
            num_layers=c.num_layers,
            bidirectional=c.bidirectional,
            dropout=c.dropout,
        )
        self.num_features = self.rnn.output_size
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(self.num_features, c.num_classes)

    def forward_features(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids (and optional (B, T) mask, True on tokens) → (B, D) pooled features."""
        if mask is None:
            mask = ids != self.config.pad_id
        lengths = mask.sum(dim=1).clamp(min=1)  # an all-padding row still reads one step
        out, state = self.rnn(self.dropout(self.embed(ids)), lengths)  # (B, T, D)
        if self.config.pool == "last":
            return self.rnn.last_hidden(state)
        real = (torch.arange(ids.shape[1], device=ids.device)[None] < lengths[:, None])[..., None]
        if self.config.pool == "mean":
            return (out * real).sum(dim=1) / lengths[:, None]
        return out.masked_fill(~real, float("-inf")).amax(dim=1)

    def forward_head(self, feats: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        # (B, D) -> (B, K)
        feats = self.dropout(feats)
        return feats if pre_logits else self.head(feats)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(ids, mask))


@dataclass(frozen=True)
class RNNLanguageModelConfig:
    """Shape of an ``RNNLanguageModel``."""

    vocab_size: int = 256
    """Tokens V (filled from the tokenizer by a recipe)."""
    embed_dim: int = 256
    """Token embedding width."""
    hidden_size: int = 512
    """Hidden units of each layer."""
    cell: str = "lstm"
    """``lstm`` or ``gru``."""
    num_layers: int = 2
    """Stacked recurrent layers."""
    dropout: float = 0.0
    """Dropout on embeddings, between layers and before the read-out."""
    tie_weights: bool = True
    """Read logits out through the token embedding (a projection first if widths differ)."""


class RNNCache:
    """The recurrent state carried between decoding steps (``length``: tokens consumed so far)."""

    def __init__(self) -> None:
        self.state: State | None = None
        self.length = 0

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows ``index`` (beam search)."""
        if isinstance(self.state, tuple):
            self.state = (self.state[0].index_select(1, index), self.state[1].index_select(1, index))
        elif self.state is not None:
            self.state = self.state.index_select(1, index)


class RNNLanguageModel(nn.Module):
    """(B, T) token ids → (B, T, V) next-token logits with an LSTM or GRU.

    Args:
        config: the shape; see ``RNNLanguageModelConfig``.
    """

    block_size = None  # no context limit

    def __init__(self, config: RNNLanguageModelConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = TokenEmbedding(c.vocab_size, c.embed_dim)
        self.rnn = Recurrent(
            c.embed_dim, c.hidden_size, cell=c.cell, num_layers=c.num_layers, dropout=c.dropout
        )
        self.dropout = nn.Dropout(c.dropout)
        if c.tie_weights:
            same = c.hidden_size == c.embed_dim
            self.proj: nn.Module = nn.Identity() if same else nn.Linear(c.hidden_size, c.embed_dim)
            self.head: nn.Linear | None = None
        else:
            self.proj, self.head = nn.Identity(), nn.Linear(c.hidden_size, c.vocab_size)

    def new_cache(self, batch_size: int = 1) -> RNNCache:
        """An empty state for step-by-step decoding."""
        return RNNCache()

    def forward(self, ids: torch.Tensor, *, cache: RNNCache | None = None) -> torch.Tensor:
        # (B, T) -> (B, T, V)
        out, state = self.rnn(self.dropout(self.embed(ids)), state=cache.state if cache else None)
        if cache is not None:
            cache.state, cache.length = state, cache.length + ids.shape[1]
        x = self.proj(self.dropout(out))
        return self.head(x) if self.head is not None else self.embed.attend(x)

    def generate(self, ids: torch.Tensor, max_new_tokens: int, **options: Any) -> torch.Tensor:
        """(B, T) prompt → (B, T + n) ids; options as `ember.decoding.generate_tokens`."""
        return sampling.generate(self, ids, max_new_tokens=max_new_tokens, **options)


register_family(RNNClassifierConfig, RNNClassifier)
register_variant(
    "rnn_classifier",
    RNNClassifierConfig,
    "A one-layer bidirectional LSTM (128 per direction) over 128-wide embeddings",
)
register_variant(
    "rnn_classifier_tiny",
    RNNClassifierConfig,
    "A bidirectional GRU of 16 units, for tests and CI",
    vocab_size=64,
    embed_dim=16,
    hidden_size=16,
    cell="gru",
)

register_family(RNNLanguageModelConfig, RNNLanguageModel)
register_variant(
    "rnn_lm", RNNLanguageModelConfig, "A two-layer LSTM of 512 units (Karpathy's char-rnn shape)"
)
register_variant(
    "rnn_lm_tiny",
    RNNLanguageModelConfig,
    "A two-layer LSTM of 24 units (tied through a projection), for tests and CI",
    vocab_size=64,
    embed_dim=16,
    hidden_size=24,
)


__all__ = [
    "RNNCache",
    "RNNClassifier",
    "RNNClassifierConfig",
    "RNNLanguageModel",
    "RNNLanguageModelConfig",
]
