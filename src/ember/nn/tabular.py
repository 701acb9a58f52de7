"""TabularStem: a table row's encoded values → one feature vector, inside the model.

The stem takes the float tensor `ember.data.tabular.RowEncoder` lays out,
``[numeric | missing indicators | category codes]``, and

- standardizes the numeric values with the training mean and std (buffers, saved with the weights),
- with bin ``edges``, also encodes each numeric value piecewise-linearly (PLE, Gorishniy et al.,
  2022, "On Embeddings for Numerical Features in Tabular Deep Learning"): one value per bin, 0 below
  it, 1 above it, the fraction of the bin in between,
- passes the 0/1 missing indicators through,
- one-hot codes categories of small cardinality and embeds the others (fastai's size rule).

Because all of this is in the module, an exported or served model takes the encoder's output as is.

Example:
    >>> import torch
    >>> stem = TabularStem(num_numeric=2, num_binary=1, cardinalities=[3, 20], mean=[0.0, 10.0], std=[1.0, 5.0])
    >>> stem(torch.tensor([[1.0, 20.0, 0.0, 2.0, 7.0]])).shape[1] == stem.out_features
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["TabularStem", "embedding_size"]


def embedding_size(cardinality: int) -> int:
    """fastai's rule of thumb: ``min(600, round(1.6 * cardinality ** 0.56))``."""
    return min(600, round(1.6 * cardinality**0.56))


class TabularStem(nn.Module):
    """``(B, num_numeric + num_binary + len(cardinalities))`` → ``(B, out_features)``.

    Args:
        num_numeric: numeric values first in each row.
        num_binary: 0/1 values after them (missing indicators), used as they are.
        cardinalities: codes per categorical column (code 0 included), last in each row.
        mean, std: per numeric value, for standardizing (training statistics).
        edges: per numeric value, ascending bin edges for the piecewise-linear encoding (None: none).
        bin_dim: with ``edges``, each value's bin encoding goes through its own linear layer to this
            many features and a ReLU (Gorishniy et al.'s "-LR"); 0 passes the encoding on as it is.
        one_hot_max: a column with at most this many codes is one-hot coded, else embedded.
        embed_dropout: dropout on the concatenated category features while training.
    """

    mean: torch.Tensor
    std: torch.Tensor
    bin_lo: torch.Tensor
    bin_width: torch.Tensor
    in_features: int
    out_features: int

    def __init__(
        self,
        *,
        num_numeric: int,
        num_binary: int = 0,
        cardinalities: Sequence[int] = (),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        edges: Sequence[Sequence[float]] | None = None,
        bin_dim: int = 0,
        one_hot_max: int = 4,
        embed_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        mean = [0.0] * num_numeric if mean is None else list(mean)
        std = [1.0] * num_numeric if std is None else list(std)
        if len(mean) != num_numeric or len(std) != num_numeric:
            raise ValueError(f"mean and std need {num_numeric} values each; got {len(mean)} and {len(std)}")
        if any(c < 1 for c in cardinalities):
            raise ValueError(f"every cardinality must be at least 1; got {list(cardinalities)}")
        self.num_numeric, self.num_binary = num_numeric, num_binary
        self.cardinalities = list(cardinalities)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).clamp_min(1e-12))
        self.bins = 0
        if edges is not None:
            if len(edges) != num_numeric:
                raise ValueError(f"edges needs {num_numeric} lists; got {len(edges)}")
            self.bins = max((len(e) - 1 for e in edges), default=0)
            # bins a column lacks start at the largest float: they encode to 0 for every value (finite,
            # so a checkpoint's check for non-finite state passes)
            lo = torch.full((num_numeric, self.bins), torch.finfo(torch.float32).max)
            span = torch.ones(num_numeric, self.bins)
            for i, column in enumerate(edges):
                e = torch.tensor(column, dtype=torch.float64)
                lo[i, : len(e) - 1] = e[:-1].float()
                span[i, : len(e) - 1] = (e[1:] - e[:-1]).float()
            self.register_buffer("bin_lo", lo)
            self.register_buffer("bin_width", span)
        self.bin_dim = bin_dim if self.bins else 0
        if self.bin_dim:  # one (bins -> bin_dim) layer per numeric column, as one batched weight
            self.bin_weight = nn.Parameter(
                torch.randn(num_numeric, self.bins, bin_dim) / math.sqrt(self.bins)
            )
            self.bin_bias = nn.Parameter(torch.zeros(num_numeric, bin_dim))
        self.embeddings = nn.ModuleList()
        self.one_hot: list[bool] = []
        width = 0
        for card in self.cardinalities:
            hot = card <= one_hot_max
            self.one_hot.append(hot)
            # a one-hot column is a fixed identity table: the same gather as an embedding, nothing to learn
            table = nn.Embedding(card, card if hot else embedding_size(card))
            if hot:
                table.weight.data.copy_(torch.eye(card))
                table.weight.requires_grad_(False)
            self.embeddings.append(table)
            width += table.embedding_dim
        self.dropout = nn.Dropout(embed_dropout)
        self.in_features = num_numeric + num_binary + len(self.cardinalities)
        self.out_features = num_numeric * (1 + (self.bin_dim or self.bins)) + num_binary + width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, F) -> (B, out_features)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"a table row here has {self.in_features} encoded values ({self.num_numeric} numeric, "
                f"{self.num_binary} missing indicators, {len(self.cardinalities)} category codes); got "
                f"input of shape {tuple(x.shape)}. Encode rows with the run's RowEncoder (preprocess.json)"
            )
        n, b = self.num_numeric, self.num_binary
        numbers = x[:, :n]
        parts = [(numbers - self.mean) / self.std, x[:, n : n + b]]
        if self.bins:  # (B, n, 1) against (n, bins) -> (B, n, bins)
            ple = ((numbers[:, :, None] - self.bin_lo) / self.bin_width).clamp(0, 1)
            if self.bin_dim:  # (B, n, bins) x (n, bins, d) -> (B, n, d)
                ple = torch.relu(torch.einsum("bnk,nkd->bnd", ple, self.bin_weight) + self.bin_bias)
            parts.append(ple.flatten(1))
        if self.cardinalities:
            codes = x[:, n + b :].round().long()
            cats = [
                table(codes[:, j].clamp(0, card - 1))
                for j, (table, card) in enumerate(zip(self.embeddings, self.cardinalities))
            ]
            parts.append(self.dropout(torch.cat(cats, dim=1)))
        return torch.cat(parts, dim=1)
