"""An encoder-decoder transformer for sequence-to-sequence tasks (translation, summarization).

The encoder reads the source with bidirectional pre-norm blocks (padding ignored); the decoder's
causal blocks attend to their own past and, through cross-attention, to the encoder's output.
Logits are read out through the decoder's token embedding (tied). With a shared vocabulary the
source and target embeddings are one matrix.

Decoding API (for greedy and beam search): ``memory = encode(src_ids, src_mask)`` once, then
``decode_step(tgt_ids, memory, src_mask, cache=cache)`` with ``cache = new_cache(batch_size)``,
feeding only new target positions; ``cache.reorder(beam_index)`` keeps chosen hypotheses. Training
calls ``forward(src_ids, tgt_ids, src_mask)`` with teacher forcing.

Example:
    >>> import torch
    >>> from ember.models import create
    >>> model = create("encoder_decoder_tiny", vocab_size=50)
    >>> src, tgt = torch.randint(1, 50, (2, 7)), torch.randint(1, 50, (2, 5))
    >>> model(src, tgt).shape
    torch.Size([2, 5, 50])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ember.models._zoo import register_family, register_variant
from ember.nn import KVCache, TokenEmbedding, TransformerBlock, make_norm, make_positional


@dataclass(frozen=True)
class EncoderDecoderConfig:
    """Shape of an ``EncoderDecoder``."""

    vocab_size: int = 8000
    """Source tokens (and target tokens unless ``tgt_vocab_size`` is set)."""
    tgt_vocab_size: int = 0
    """Target tokens when the vocabularies differ (0: the same as ``vocab_size``, embeddings shared)."""
    max_len: int = 256
    """Longest source or target sequence."""
    encoder_layers: int = 3
    """Encoder blocks."""
    decoder_layers: int = 3
    """Decoder blocks."""
    num_heads: int = 4
    """Attention heads; must divide ``embed_dim``."""
    embed_dim: int = 256
    """Width C."""
    mlp_ratio: float = 4.0
    """MLP hidden width as a multiple of C."""
    dropout: float = 0.1
    """Dropout on embeddings, attention and residual branches."""
    norm: str = "layer"
    """``layer`` or ``rms``."""
    mlp: str = "gelu"
    """``gelu`` or ``swiglu``."""
    pos_embed: str = "sinusoidal"
    """``sinusoidal``, ``learned``, ``rope`` or ``none``."""
    pad_id: int = 0
    """Token id of padding in both languages."""


class EncoderDecoder(nn.Module):
    """(B, S) source ids and (B, T) target ids → (B, T, V) next-target-token logits.

    Args:
        config: the shape; see ``EncoderDecoderConfig``.
    """

    def __init__(self, config: EncoderDecoderConfig) -> None:
        super().__init__()
        self.config = c = config
        self.block_size = c.max_len
        tgt_vocab = c.tgt_vocab_size or c.vocab_size
        self.src_embed = TokenEmbedding(c.vocab_size, c.embed_dim, padding_idx=c.pad_id)
        # a shared vocabulary shares the matrix; registering it twice would save it twice
        self.own_tgt_embed = (
            TokenEmbedding(tgt_vocab, c.embed_dim, padding_idx=c.pad_id) if c.tgt_vocab_size else None
        )
        self.src_pos = make_positional(c.pos_embed, max_len=c.max_len, dim=c.embed_dim)
        self.tgt_pos = make_positional(c.pos_embed, max_len=c.max_len, dim=c.embed_dim)
        self.drop = nn.Dropout(c.dropout)

        def block(causal: bool) -> TransformerBlock:
            return TransformerBlock(
                c.embed_dim,
                c.num_heads,
                mlp_ratio=c.mlp_ratio,
                norm=c.norm,
                mlp=c.mlp,
                causal=causal,
                cross_attention=causal,
                dropout=c.dropout,
                rope=c.pos_embed == "rope",
                max_len=c.max_len,
            )

        self.encoder = nn.ModuleList(block(False) for _ in range(c.encoder_layers))
        self.decoder = nn.ModuleList(block(True) for _ in range(c.decoder_layers))
        self.encoder_norm = make_norm(c.norm, c.embed_dim, dims=0)
        self.decoder_norm = make_norm(c.norm, c.embed_dim, dims=0)
        self.scale = c.embed_dim**0.5  # embeddings scaled as in "Attention Is All You Need"
        for embed in dict.fromkeys((self.src_embed, self.tgt_embed)):  # one matrix when shared, in order
            # N(0, 1/C): scaled by sqrt(C) the inputs have unit variance, and the tied read-out starts
            # with logits of unit scale (nn.Embedding's N(0, 1) would start the loss near 20x ln V)
            nn.init.normal_(embed.weight, std=c.embed_dim**-0.5)
            with torch.no_grad():
                embed.weight[c.pad_id].zero_()

    @property
    def tgt_embed(self) -> TokenEmbedding:
        """The target embedding (and read-out): the source one when the vocabulary is shared."""
        return self.own_tgt_embed if self.own_tgt_embed is not None else self.src_embed

    def source_mask(self, src_ids: torch.Tensor) -> torch.Tensor:
        """(B, S) True on real source tokens (not ``pad_id``)."""
        return src_ids != self.config.pad_id

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) source ids → (B, S, C) memory for the decoder."""
        if src_mask is None:
            src_mask = self.source_mask(src_ids)
        x = self.src_embed(src_ids) * self.scale
        if self.src_pos is not None:
            x = self.src_pos(x)
        x = self.drop(x)
        for block in self.encoder:
            x = block(x, mask=src_mask)
        return self.encoder_norm(x)

    def new_cache(self, batch_size: int = 1) -> KVCache:
        """An empty decoder cache (self-attention keys/values and projected memory per layer)."""
        return KVCache(len(self.decoder), self.block_size)

    def decode_step(
        self,
        tgt_ids: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, V) for target positions ``tgt_ids`` (B, T) that follow the cached ones.

        Args:
            tgt_ids: the new target ids (one per step when decoding; all for teacher forcing).
            memory: ``encode``'s output (B, S, C).
            src_mask: (B, S) True on real source tokens (as given to ``encode``).
            cache: from ``new_cache``; None runs the whole target prefix.
        """
        past = cache.length if cache is not None else 0
        x = self.tgt_embed(tgt_ids) * self.scale
        if self.tgt_pos is not None:
            x = self.tgt_pos(x, past)
        x = self.drop(x)
        for i, block in enumerate(self.decoder):
            layer = cache.layers[i] if cache is not None else None
            x = block(x, memory=memory, memory_mask=src_mask, cache=layer)
        return self.tgt_embed.attend(self.decoder_norm(x))

    def forward(
        self, src_ids: torch.Tensor, tgt_ids: torch.Tensor, src_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        # (B, S), (B, T) -> (B, T, V)
        if src_mask is None:
            src_mask = self.source_mask(src_ids)
        return self.decode_step(tgt_ids, self.encode(src_ids, src_mask), src_mask)


register_family(EncoderDecoderConfig, EncoderDecoder)
register_variant(
    "encoder_decoder", EncoderDecoderConfig, "3 + 3 blocks, 4 heads, 256 wide: a small translation model"
)
register_variant(
    "encoder_decoder_tiny",
    EncoderDecoderConfig,
    "One encoder and one decoder block, 16 wide, for tests and CI",
    vocab_size=64,
    max_len=64,
    encoder_layers=1,
    decoder_layers=1,
    num_heads=2,
    embed_dim=16,
    mlp_ratio=2.0,
    dropout=0.0,
)


__all__ = ["EncoderDecoder", "EncoderDecoderConfig"]
