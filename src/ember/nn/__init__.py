"""Building blocks: plain ``nn.Module``s, one concept per file, composed by name (``norm=``, ``act=``).

Example:
    >>> import torch
    >>> from ember import nn as enn
    >>> block = enn.ResidualBlock(16, 32, stride=2, norm="group", act="silu")
    >>> block(torch.randn(2, 16, 8, 8)).shape
    torch.Size([2, 32, 4, 4])
"""

from ember.nn import checkpointing, lora
from ember.nn.activations import get_activation, list_activations
from ember.nn.attention import MultiHeadSelfAttention
from ember.nn.causal import CrossAttention, KVCache, LayerCache, SelfAttention
from ember.nn.conv import ConvBlock, DepthwiseSeparable, SqueezeExcite
from ember.nn.dropout import DropPath
from ember.nn.embeddings import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
    make_positional,
)
from ember.nn.norm import ChannelsLast, RMSNorm, default_groups, list_norms, make_norm
from ember.nn.recurrent import Recurrent
from ember.nn.residual import ResidualBlock
from ember.nn.tabular import TabularStem, embedding_size
from ember.nn.transformer import FeedForward, SwiGLU, TransformerBlock, make_mlp

__all__ = [
    "ChannelsLast",
    "ConvBlock",
    "DepthwiseSeparable",
    "DropPath",
    "MultiHeadSelfAttention",
    "RMSNorm",
    "ResidualBlock",
    "SqueezeExcite",
    "default_groups",
    "get_activation",
    "list_activations",
    "list_norms",
    "make_norm",
    # tables
    "TabularStem",
    "embedding_size",
    # sequences
    "CrossAttention",
    "FeedForward",
    "KVCache",
    "LayerCache",
    "LearnedPositionalEmbedding",
    "Recurrent",
    "RotaryEmbedding",
    "SelfAttention",
    "SinusoidalPositionalEncoding",
    "SwiGLU",
    "TokenEmbedding",
    "TransformerBlock",
    "checkpointing",
    "lora",
    "make_mlp",
    "make_positional",
]
