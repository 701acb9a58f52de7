"""Attention for sequence models: self-attention (causal or not) with a KV cache, and cross-attention.

Decoding one token at a time recomputes nothing: each layer keeps the keys and values of the
positions it has seen in a `LayerCache` (preallocated to ``max_len``), and a new token's query
attends to them. A model holds one `KVCache` (a `LayerCache` per layer) for a whole generation;
``KVCache.reorder`` follows beam search's choice of hypotheses.

Masks follow ``F.scaled_dot_product_attention``: a boolean mask is True where attention is
*allowed*. Padding masks are ``(B, S)``, True on real tokens.

Example:
    >>> import torch
    >>> from ember.nn import SelfAttention, KVCache
    >>> attn = SelfAttention(16, 2, causal=True).eval()
    >>> x = torch.randn(1, 5, 16)
    >>> cache = KVCache(num_layers=1, max_len=8)
    >>> steps = [attn(x[:, t : t + 1], cache=cache.layers[0]) for t in range(5)]
    >>> torch.allclose(torch.cat(steps, dim=1), attn(x), atol=1e-6)
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ember.nn.embeddings import RotaryEmbedding


class LayerCache:
    """One attention layer's cached keys/values: self-attention grows, cross-attention is fixed.

    Args:
        max_len: most positions the self-attention cache holds.
    """

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self.length = 0
        self.k: torch.Tensor | None = None  # (B, H, max_len, D), allocated on first use
        self.v: torch.Tensor | None = None
        self.cross: tuple[torch.Tensor, torch.Tensor] | None = None  # projected memory (B, H, S, D)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, H, T, D) keys/values after the cached ones; return all (B, H, length, D)."""
        T = k.shape[2]
        if self.length + T > self.max_len:
            raise ValueError(
                f"KV cache holds {self.max_len} positions; {self.length} are used and {T} more were given. "
                "Make the cache larger or start a new one (generation crops the context for you)."
            )
        if self.k is None or self.v is None:
            B, H, _, D = k.shape
            self.k = k.new_empty(B, H, self.max_len, D)
            self.v = v.new_empty(B, H, self.max_len, D)
        elif self.k.dtype != k.dtype:  # e.g. a bf16-autocast prefill, then fp32 steps: keep what is cached
            self.k, self.v = self.k.to(k.dtype), self.v.to(v.dtype)
        end = self.length + T
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows ``index`` (beam search: the hypotheses that survived), in that order."""
        if self.k is not None and self.v is not None:
            n = self.length
            if len(index) == self.k.shape[0]:  # beam search: copy only the filled positions, in place
                self.k[:, :, :n], self.v[:, :, :n] = self.k[index, :, :n], self.v[index, :, :n]
            else:
                self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)
        if self.cross is not None:
            self.cross = (self.cross[0].index_select(0, index), self.cross[1].index_select(0, index))


class KVCache:
    """The caches of every layer of a model, for one generation.

    Args:
        num_layers: attention layers (one `LayerCache` each).
        max_len: most positions cached (a model's ``block_size``).

    Example:
        >>> cache = KVCache(num_layers=2, max_len=16)
        >>> cache.length, len(cache.layers)
        (0, 2)
    """

    def __init__(self, num_layers: int, max_len: int) -> None:
        self.max_len = max_len
        self.layers = [LayerCache(max_len) for _ in range(num_layers)]

    @property
    def length(self) -> int:
        """Positions already cached (the absolute position of the next token)."""
        return self.layers[0].length if self.layers else 0

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows ``index`` in every layer (see `LayerCache.reorder`)."""
        for layer in self.layers:
            layer.reorder(index)


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    # (B, T, C) -> (B, H, T, C / H)
    B, T, C = x.shape
    return x.view(B, T, num_heads, C // num_heads).transpose(1, 2)


def _merge_heads(y: torch.Tensor) -> torch.Tensor:
    # (B, H, T, D) -> (B, T, H * D)
    B, H, T, D = y.shape
    return y.transpose(1, 2).reshape(B, T, H * D)


class SelfAttention(nn.Module):
    """Multi-head self-attention over (B, T, C), causal or bidirectional, with an optional KV cache.

    One fused q/k/v projection and ``F.scaled_dot_product_attention`` (fused CPU/GPU kernels): the
    layout of nanoGPT's ``CausalSelfAttention``.

    Args:
        embed_dim: width C; divisible by ``num_heads``.
        num_heads: attention heads H.
        causal: each position attends only to itself and earlier ones.
        dropout: dropout on attention weights while training.
        bias: biases on the projections.
        rope: rotate queries and keys by position (RoPE) instead of adding positions to the input.
        max_len: longest sequence RoPE supports.

    Example:
        >>> attn = SelfAttention(16, 4, causal=True, rope=True, max_len=32)
        >>> attn(torch.randn(2, 6, 16)).shape
        torch.Size([2, 6, 16])
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        causal: bool = False,
        dropout: float = 0.0,
        bias: bool = True,
        rope: bool = False,
        max_len: int = 2048,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim, self.num_heads, self.causal, self.dropout = embed_dim, num_heads, causal, dropout
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.rope = RotaryEmbedding(embed_dim // num_heads, max_len=max_len) if rope else None

    def forward(
        self, x: torch.Tensor, *, mask: torch.Tensor | None = None, cache: LayerCache | None = None
    ) -> torch.Tensor:
        """Attend.

        Args:
            x: (B, T, C) inputs; with a cache, the T positions after the cached ones.
            mask: (B, S) key padding mask, True on real tokens (S = cached + T).
            cache: this layer's `LayerCache`; keys/values of ``x`` are appended to it.

        Returns:
            (B, T, C) outputs.
        """
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (_split_heads(t, self.num_heads) for t in (q, k, v))  # (B, H, T, D) each
        past = cache.length if cache is not None else 0
        if self.rope is not None:
            q, k = self.rope(q, past), self.rope(k, past)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H, past + T, D)
        attn_mask, is_causal = self._mask(mask, T, past, x.device)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p, is_causal=is_causal)
        return self.proj(_merge_heads(y))

    def _mask(
        self, padding: torch.Tensor | None, T: int, past: int, device: torch.device
    ) -> tuple[torch.Tensor | None, bool]:
        """SDPA's (attn_mask, is_causal) for T queries after ``past`` cached positions."""
        S = past + T
        allowed = None
        if self.causal and T > 1:
            if past == 0 and padding is None:
                return None, True  # the fused kernels' own causal path
            # query i sits at position past + i and may see keys 0 .. past + i
            allowed = torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=past)
        if padding is not None:
            if padding.shape[-1] != S:
                raise ValueError(f"padding mask covers {padding.shape[-1]} keys; attention has {S}")
            keys = padding.bool()[:, None, None, :]  # (B, 1, 1, S)
            allowed = keys if allowed is None else keys & allowed
        return allowed, False


class CrossAttention(nn.Module):
    """Queries from a (B, T, C) sequence attend to a (B, S, kdim) memory (an encoder's output).

    With a cache, the memory's keys and values are projected once and reused at every step.

    Args:
        embed_dim: query width C; divisible by ``num_heads``.
        num_heads: attention heads.
        kdim: memory width (default C).
        dropout: dropout on attention weights while training.
        bias: biases on the projections.

    Example:
        >>> attn = CrossAttention(16, 2)
        >>> attn(torch.randn(2, 3, 16), torch.randn(2, 7, 16)).shape
        torch.Size([2, 3, 16])
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        kdim: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.q = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.kv = nn.Linear(kdim or embed_dim, 2 * embed_dim, bias=bias)
        self.proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        *,
        memory_mask: torch.Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        """Attend from ``x`` (B, T, C) to ``memory`` (B, S, kdim); ``memory_mask`` (B, S) True on real tokens."""
        q = _split_heads(self.q(x), self.num_heads)
        if cache is not None and cache.cross is not None:
            k, v = cache.cross
        else:
            k, v = (_split_heads(t, self.num_heads) for t in self.kv(memory).split(self.embed_dim, dim=2))
            if cache is not None:
                cache.cross = (k, v)
        mask = memory_mask.bool()[:, None, None, :] if memory_mask is not None else None
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.proj(_merge_heads(y))


__all__ = ["CrossAttention", "KVCache", "LayerCache", "SelfAttention"]
