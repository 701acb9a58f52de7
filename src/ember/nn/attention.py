"""Multi-head self-attention on ``F.scaled_dot_product_attention`` (fused kernels where available).

Example:
    >>> import torch
    >>> from ember.nn import MultiHeadSelfAttention
    >>> MultiHeadSelfAttention(32, 4)(torch.randn(2, 10, 32), is_causal=True).shape
    torch.Size([2, 10, 32])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadSelfAttention(nn.Module):
    """Self-attention over a (B, T, C) sequence: one fused q/k/v projection, SDPA, output projection.

    Numerically the same as ``nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)`` called
    as ``mha(x, x, x)`` with ``qkv`` = ``in_proj`` and ``proj`` = ``out_proj``. Note the mask follows
    SDPA's convention: a boolean ``attn_mask`` is True where attention is *allowed* (the opposite of
    ``nn.MultiheadAttention``); a float mask is added to the scores.

    Args:
        embed_dim: model width C; must be divisible by ``num_heads``.
        num_heads: attention heads.
        dropout: dropout on the attention weights while training.
        bias: biases on the projections.

    Example:
        >>> attn = MultiHeadSelfAttention(16, 2)
        >>> attn(torch.randn(1, 5, 16)).shape
        torch.Size([1, 5, 16])
    """

    def __init__(self, embed_dim: int, num_heads: int, *, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, *, is_causal: bool = False
    ) -> torch.Tensor:
        """Attend.

        Args:
            x: (B, T, C) inputs.
            attn_mask: optional (T, T) or (B, num_heads, T, T) mask, SDPA convention (see class).
            is_causal: each position attends only to itself and earlier ones.

        Returns:
            (B, T, C) outputs.
        """
        B, T, C = x.shape
        # (B, T, 3C) -> 3 x (B, H, T, C/H)
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p, is_causal=is_causal)
        # (B, H, T, C/H) -> (B, T, C)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))
