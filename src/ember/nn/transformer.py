"""The pre-norm transformer block and its MLPs (GELU or SwiGLU), for encoders, decoders and GPTs.

``TransformerBlock`` is ``x + attn(norm(x))`` then ``x + mlp(norm(x))`` (GPT-2 / LLaMA order), with
an optional cross-attention sub-layer between them for encoder-decoder models. The norm is a
``make_norm`` name (``layer`` or ``rms``), the MLP ``gelu`` or ``swiglu``. Activation
checkpointing (`ember.nn.checkpointing.apply`) recognizes these blocks.

Example:
    >>> import torch
    >>> from ember.nn import TransformerBlock
    >>> block = TransformerBlock(32, 4, causal=True, norm="rms", mlp="swiglu")
    >>> block(torch.randn(2, 10, 32)).shape
    torch.Size([2, 10, 32])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ember.nn.activations import get_activation
from ember.nn.causal import CrossAttention, LayerCache, SelfAttention
from ember.nn.dropout import DropPath
from ember.nn.norm import make_norm


class FeedForward(nn.Module):
    """``Linear(C, hidden) → act → Linear(hidden, C) → dropout``: the transformer MLP of GPT-2 / BERT.

    Example:
        >>> FeedForward(8, 32)(torch.randn(2, 3, 8)).shape
        torch.Size([2, 3, 8])
    """

    def __init__(
        self, dim: int, hidden: int, *, act: str = "gelu", dropout: float = 0.0, bias: bool = True
    ) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, hidden, bias=bias)
        self.act = get_activation(act)
        self.proj = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., C) -> (..., hidden) -> (..., C)
        return self.dropout(self.proj(self.act(self.fc(x))))


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))`` (Shazeer 2020; LLaMA's MLP), gate and up fused in one matmul.

    Example:
        >>> SwiGLU(8, 16)(torch.randn(2, 3, 8)).shape
        torch.Size([2, 3, 8])
    """

    def __init__(self, dim: int, hidden: int, *, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.hidden = hidden
        self.fc = nn.Linear(dim, 2 * hidden, bias=bias)  # [gate | up]
        self.proj = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., C) -> 2 x (..., hidden) -> (..., C)
        gate, up = self.fc(x).split(self.hidden, dim=-1)
        return self.dropout(self.proj(F.silu(gate) * up))


def make_mlp(
    kind: str, dim: int, *, mlp_ratio: float = 4.0, dropout: float = 0.0, bias: bool = True
) -> nn.Module:
    """The block MLP by name: ``gelu`` (hidden ``mlp_ratio * C``) or ``swiglu``.

    SwiGLU's hidden width is two thirds of ``mlp_ratio * C`` (rounded up to a multiple of 8), so
    its three matrices hold as many weights as the GELU MLP's two.

    Example:
        >>> make_mlp("swiglu", 48).hidden
        128
    """
    if kind == "gelu":
        return FeedForward(dim, int(mlp_ratio * dim), act="gelu", dropout=dropout, bias=bias)
    if kind == "swiglu":
        hidden = -(-int(2 * mlp_ratio * dim / 3) // 8) * 8
        return SwiGLU(dim, hidden, dropout=dropout, bias=bias)
    raise ValueError(f"unknown mlp '{kind}'; expected gelu or swiglu")


class TransformerBlock(nn.Module):
    """Pre-norm transformer block over (B, T, C): self-attention, optional cross-attention, MLP.

    Args:
        dim: width C.
        num_heads: attention heads (divide C).
        mlp_ratio: MLP hidden width as a multiple of C.
        norm: ``make_norm`` name: ``layer`` (LayerNorm) or ``rms`` (RMSNorm).
        mlp: ``gelu`` or ``swiglu``.
        causal: self-attention sees only earlier positions (decoders, GPT).
        cross_attention: add a sub-layer attending to an encoder's memory (seq2seq decoders).
        dropout: on attention weights and on each sub-layer's output while training.
        bias: biases on the linear layers.
        rope: rotary position embedding inside self-attention.
        max_len: longest sequence RoPE supports.
        drop_path: stochastic depth on each residual branch.

    Example:
        >>> block = TransformerBlock(16, 2, causal=True, cross_attention=True)
        >>> block(torch.randn(2, 4, 16), memory=torch.randn(2, 6, 16)).shape
        torch.Size([2, 4, 16])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        norm: str = "layer",
        mlp: str = "gelu",
        causal: bool = False,
        cross_attention: bool = False,
        dropout: float = 0.0,
        bias: bool = True,
        rope: bool = False,
        max_len: int = 2048,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, dim, dims=0)
        self.attn = SelfAttention(
            dim, num_heads, causal=causal, dropout=dropout, bias=bias, rope=rope, max_len=max_len
        )
        self.norm_cross = make_norm(norm, dim, dims=0) if cross_attention else None
        self.cross_attn = (
            CrossAttention(dim, num_heads, dropout=dropout, bias=bias) if cross_attention else None
        )
        self.norm2 = make_norm(norm, dim, dims=0)
        self.mlp = make_mlp(mlp, dim, mlp_ratio=mlp_ratio, dropout=dropout, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        """(B, T, C) → (B, T, C).

        Args:
            x: the sequence (with a cache: the positions after the cached ones).
            mask: (B, S) self-attention key padding mask, True on real tokens.
            memory: (B, S', C) encoder output, needed when built with ``cross_attention``.
            memory_mask: (B, S') True on real memory tokens.
            cache: this block's `LayerCache` for incremental decoding.
        """
        x = x + self.drop_path(self.resid_dropout(self.attn(self.norm1(x), mask=mask, cache=cache)))
        if self.cross_attn is not None and self.norm_cross is not None:
            if memory is None:
                raise ValueError("this block has cross-attention: pass memory= (the encoder's output)")
            attended = self.cross_attn(self.norm_cross(x), memory, memory_mask=memory_mask, cache=cache)
            x = x + self.drop_path(self.resid_dropout(attended))
        return x + self.drop_path(self.mlp(self.norm2(x)))


__all__ = ["FeedForward", "SwiGLU", "TransformerBlock", "make_mlp"]
