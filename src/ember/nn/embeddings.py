"""Token embeddings (with a tied read-out) and positional encodings: sinusoidal, learned, rotary.

``TokenEmbedding.attend`` is the tied output layer: logits are ``x @ weight.T`` with the very
embedding matrix, so weight tying costs no second parameter and ``state_dict`` holds one tensor
(safetensors refuses tensors that share memory).

Example:
    >>> import torch
    >>> from ember.nn import TokenEmbedding, SinusoidalPositionalEncoding
    >>> emb, pos = TokenEmbedding(50, 16), SinusoidalPositionalEncoding(16, max_len=32)
    >>> x = emb(torch.tensor([[1, 2, 3]]))
    >>> emb.attend(pos(x)).shape
    torch.Size([1, 3, 50])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TokenEmbedding(nn.Embedding):
    """``nn.Embedding`` with ``attend``: the same matrix read out as an output layer (weight tying).

    Args:
        num_embeddings: vocabulary size V.
        embedding_dim: width C.
        padding_idx: as for ``nn.Embedding`` (its row gets no gradient).

    Example:
        >>> emb = TokenEmbedding(10, 4)
        >>> emb.attend(emb(torch.tensor([[0, 1]]))).shape
        torch.Size([1, 2, 10])
    """

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        # (..., C) -> (..., V): logits against every token's embedding
        return F.linear(x, self.weight)


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sine/cosine table of "Attention Is All You Need" to a (B, T, C) sequence.

    The table is a non-persistent buffer: it is rebuilt, not saved, so checkpoints stay small and
    ``max_len`` can change between training and inference.

    Args:
        dim: width C (even).
        max_len: longest sequence supported.
        base: the wavelength base (10,000 in the paper).

    Example:
        >>> SinusoidalPositionalEncoding(8, max_len=16)(torch.zeros(1, 5, 8)).shape
        torch.Size([1, 5, 8])
    """

    table: torch.Tensor

    def __init__(self, dim: int, *, max_len: int = 2048, base: float = 10_000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"sinusoidal encodings need an even width; got dim={dim}")
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(base) / dim))
        table = torch.zeros(max_len, dim)
        table[:, 0::2] = torch.sin(position * freq)
        table[:, 1::2] = torch.cos(position * freq)
        self.register_buffer("table", table, persistent=False)
        self.max_len = max_len

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        # (B, T, C) -> (B, T, C); ``offset``: absolute position of x[:, 0] (cached decoding)
        T = x.shape[1]
        _check_length(offset + T, self.max_len)
        return x + self.table[offset : offset + T].to(x.dtype)


class LearnedPositionalEmbedding(nn.Module):
    """Adds a trained (max_len, C) table of position vectors (GPT-2, BERT, ViT).

    Args:
        max_len: longest sequence supported (the table's rows).
        dim: width C.

    Example:
        >>> LearnedPositionalEmbedding(16, 8)(torch.zeros(2, 5, 8)).shape
        torch.Size([2, 5, 8])
    """

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.randn(max_len, dim) * 0.02)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        # (B, T, C) -> (B, T, C)
        T = x.shape[1]
        _check_length(offset + T, self.max_len)
        return x + self.weight[offset : offset + T]


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE, Su et al. 2021) applied to queries and keys inside attention.

    Pairs of channels ``(i, i + D/2)`` of each head are rotated by the angle ``position * base **
    (-2i / D)`` (the "rotate half" layout of GPT-NeoX and LLaMA), so the score of a query and a key
    depends only on their distance. Nothing is added to the residual stream, and nothing is learned.

    Args:
        head_dim: per-head width D (even).
        max_len: longest sequence supported.
        base: the frequency base (10,000 in the paper).

    Example:
        >>> rope = RotaryEmbedding(8, max_len=16)
        >>> q = torch.randn(1, 2, 5, 8)
        >>> rope(q).shape
        torch.Size([1, 2, 5, 8])
    """

    cos: torch.Tensor
    sin: torch.Tensor

    def __init__(self, head_dim: int, *, max_len: int = 2048, base: float = 10_000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head width; got head_dim={head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (L, D/2)
        angles = torch.cat([angles, angles], dim=-1)  # (L, D)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        self.max_len = max_len

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        # (B, H, T, D) -> (B, H, T, D); x[:, :, 0] sits at absolute position ``offset``
        T = x.shape[-2]
        _check_length(offset + T, self.max_len)
        cos = self.cos[offset : offset + T].to(x.dtype)
        sin = self.sin[offset : offset + T].to(x.dtype)
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin


def _check_length(length: int, max_len: int) -> None:
    if length > max_len:
        raise ValueError(
            f"sequence of {length} positions is longer than the {max_len} the positional encoding "
            "was built for; crop the input or build the model with a larger block_size / max_len"
        )


def make_positional(kind: str, *, max_len: int, dim: int) -> nn.Module | None:
    """The additive positional layer by name: ``learned``, ``sinusoidal``; None for ``rope``/``none``.

    RoPE acts inside attention (see `RotaryEmbedding`), so it adds nothing to the embeddings.

    Example:
        >>> type(make_positional("sinusoidal", max_len=8, dim=4)).__name__
        'SinusoidalPositionalEncoding'
    """
    if kind == "learned":
        return LearnedPositionalEmbedding(max_len, dim)
    if kind == "sinusoidal":
        return SinusoidalPositionalEncoding(dim, max_len=max_len)
    if kind in ("rope", "none"):
        return None
    raise ValueError(f"unknown positional encoding '{kind}'; expected learned, sinusoidal, rope or none")


__all__ = [
    "LearnedPositionalEmbedding",
    "RotaryEmbedding",
    "SinusoidalPositionalEncoding",
    "TokenEmbedding",
    "make_positional",
]
