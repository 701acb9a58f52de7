"""A captioner: a small CNN reads the image into a grid of feature vectors, and a transformer decoder
writes a phrase about it word by word, attending to that grid (Show, Attend and Tell, with a
transformer decoder).

It has the encoder-decoder decoding interface of `ember.decoding.beam` (greedy and beam
search): ``encode(images, mask) -> memory`` with ``mask = source_mask(images)`` (every grid
cell is real),
``new_cache(batch_size)`` and ``decode_step(tgt_ids, memory, mask, cache=cache)``. Words are those
of an `ember.data.phrases.PhraseSet` (``phrases``), whose vocabulary fixes ``vocab_size``.

Example:
    >>> import torch
    >>> from ember.models import create
    >>> model = create("captioner_tiny", in_channels=1, image_size=8)
    >>> model(torch.rand(2, 1, 8, 8), torch.tensor([[1, 20, 5], [1, 7, 2]])).shape
    torch.Size([2, 3, 35])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ember.data.phrases import PAD, PhraseSet, phrase_set
from ember.models._zoo import register_family, register_variant
from ember.nn import ConvBlock, KVCache, TokenEmbedding, TransformerBlock, make_norm
from ember.nn.embeddings import LearnedPositionalEmbedding

__all__ = ["Captioner", "CaptionerConfig"]


@dataclass(frozen=True)
class CaptionerConfig:
    """Shape of a ``Captioner``."""

    in_channels: int = 1
    """Image channels C."""
    image_size: int = 28
    """Image side; the encoder's grid is (image_size / 4) squared cells."""
    phrases: str = "digits"
    """The `ember.data.phrases` set whose words the captioner writes."""
    width: int = 32
    """Channels of the encoder's first stage (doubled in the second)."""
    embed_dim: int = 64
    """Width C of the decoder."""
    decoder_layers: int = 2
    """Decoder blocks."""
    num_heads: int = 4
    """Attention heads; must divide ``embed_dim``."""
    max_len: int = 16
    """Longest caption in tokens (<bos> and <eos> included)."""
    dropout: float = 0.1
    """Dropout in the decoder."""


class Captioner(nn.Module):
    """(B, C, H, W) images and (B, T) caption ids → (B, T, V) next-word logits.

    Args:
        config: the shape; see ``CaptionerConfig``.
    """

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.config = c = config
        if c.image_size % 4:
            raise ValueError(f"image_size must divide by 4 (two stride-2 stages); got {c.image_size}")
        vocab = self.phrases.vocab_size
        self.block_size = c.max_len
        self.encoder = nn.Sequential(
            ConvBlock(c.in_channels, c.width, 3, norm="batch", act="relu"),
            ConvBlock(c.width, c.width, 3, stride=2, norm="batch", act="relu"),
            ConvBlock(c.width, 2 * c.width, 3, norm="batch", act="relu"),
            ConvBlock(2 * c.width, 2 * c.width, 3, stride=2, norm="batch", act="relu"),
            nn.Conv2d(2 * c.width, c.embed_dim, 1),
        )
        cells = (c.image_size // 4) ** 2
        self.grid_pos = nn.Parameter(torch.zeros(1, cells, c.embed_dim))
        nn.init.normal_(self.grid_pos, std=0.02)
        self.embed = TokenEmbedding(vocab, c.embed_dim, padding_idx=PAD)
        self.pos = LearnedPositionalEmbedding(c.max_len, c.embed_dim)
        self.drop = nn.Dropout(c.dropout)
        self.decoder = nn.ModuleList(
            TransformerBlock(
                c.embed_dim,
                c.num_heads,
                causal=True,
                cross_attention=True,
                dropout=c.dropout,
                max_len=c.max_len,
            )
            for _ in range(c.decoder_layers)
        )
        self.norm = make_norm("layer", c.embed_dim, dims=0)

    @property
    def phrases(self) -> PhraseSet:
        """The phrase set whose vocabulary the captioner writes."""
        return phrase_set(self.config.phrases)

    def encode(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) → (B, S, C_d) memory: one vector per grid cell."""
        grid = self.encoder(images)  # (B, C_d, H / 4, W / 4)
        return grid.flatten(2).transpose(1, 2) + self.grid_pos

    def source_mask(self, images: torch.Tensor) -> torch.Tensor:
        """(B, S) all True, S the grid's cells: every cell is real (what a search passes to ``encode``)."""
        cells = (images.shape[-2] // 4) * (images.shape[-1] // 4)
        return torch.ones(images.shape[0], cells, dtype=torch.bool, device=images.device)

    def new_cache(self, batch_size: int = 1) -> KVCache:
        """An empty decoder cache."""
        return KVCache(len(self.decoder), self.block_size)

    def decode_step(
        self,
        tgt_ids: torch.Tensor,
        memory: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, V) for caption positions ``tgt_ids`` (B, T) that follow the cached ones."""
        past = cache.length if cache is not None else 0
        x = self.drop(self.pos(self.embed(tgt_ids), past))
        for i, block in enumerate(self.decoder):
            x = block(
                x, memory=memory, memory_mask=mask, cache=cache.layers[i] if cache is not None else None
            )
        return self.embed.attend(self.norm(x))

    def forward(self, images: torch.Tensor, tgt_ids: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W), (B, T) -> (B, T, V)
        return self.decode_step(tgt_ids, self.encode(images))


register_family(CaptionerConfig, Captioner)
register_variant("captioner", CaptionerConfig, "A 32/64-channel CNN encoder and a two-block, 64-wide decoder")
register_variant(
    "captioner_tiny",
    CaptionerConfig,
    "A one-block, 16-wide captioner, for tests and CI",
    width=4,
    embed_dim=16,
    decoder_layers=1,
    num_heads=2,
    dropout=0.0,
)
