"""Table models: `TabularStem` (standardize, embed category codes) → the MLP body → linear head.

A table model's builder takes what `ember.data.tabular.RowEncoder.model_inputs` gives: the numeric
count, the missing-indicator count, each categorical column's cardinality and the numeric training
statistics. A recipe fills them from the data, so a config names only the model and its width.

Example:
    >>> import torch
    >>> from ember.models import create
    >>> model = create("tabular_mlp_tiny", num_numeric=2, cardinalities=[5], num_classes=2)
    >>> model(torch.tensor([[0.5, 1.0, 3.0]])).shape
    torch.Size([1, 2])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from ember.models._zoo import register_family, register_variant
from ember.models.mlp import MLP, MLPConfig
from ember.nn.tabular import TabularStem


@dataclass(frozen=True)
class TabularMLPConfig:
    """Shape of a ``TabularMLP``."""

    num_numeric: int = 0
    """Numeric values first in each encoded row (standardized inside the model)."""
    num_binary: int = 0
    """0/1 missing indicators after them."""
    cardinalities: tuple[int, ...] = ()
    """Codes per categorical column, code 0 (missing or unseen) included."""
    mean: tuple[float, ...] | None = None
    """Training mean of each numeric value (None: 0)."""
    std: tuple[float, ...] | None = None
    """Training std of each numeric value (None: 1)."""
    edges: tuple[tuple[float, ...], ...] | None = None
    """Quantile bin edges of each numeric value, for the piecewise-linear encoding."""
    numeric_bins: bool = True
    """Also encode numbers piecewise-linearly over ``edges`` (when given)."""
    bin_dim: int = 0
    """Pass each number's bin encoding through its own linear layer of this width and a ReLU (0: off)."""
    num_classes: int = 2
    """Output logits K (1 for regression)."""
    target_mean: float = 0.0
    """Regression: the training targets' mean; outputs are ``head(x) * target_std + target_mean``."""
    target_std: float = 1.0
    """Regression: the training targets' std (so the head learns standardized targets)."""
    width: int = 256
    """Units in each hidden layer."""
    depth: int = 2
    """Number of hidden layers."""
    dropout: float = 0.1
    """Dropout after each hidden activation."""
    embed_dropout: float = 0.0
    """Dropout on the category features."""
    norm: str = "batch"
    """Norm after each hidden linear layer: "none", "batch" or "layer"."""
    act: str = "relu"
    """Hidden activation, a ``get_activation`` name."""
    one_hot_max: int = 4
    """Categorical columns with at most this many codes are one-hot coded, others embedded."""


class TabularMLP(nn.Module):
    """Encoded table rows ``(B, F)`` → ``(B, K)``: stem, then [linear → norm → act → dropout] x depth, head.

    Args:
        config: the shape; see ``TabularMLPConfig``.
    """

    target_mean: torch.Tensor
    target_std: torch.Tensor

    def __init__(self, config: TabularMLPConfig) -> None:
        super().__init__()
        c = self.config = config
        self.stem = TabularStem(
            num_numeric=c.num_numeric, num_binary=c.num_binary, cardinalities=c.cardinalities,
            mean=c.mean, std=c.std, edges=c.edges if c.numeric_bins else None, bin_dim=c.bin_dim, one_hot_max=c.one_hot_max, embed_dropout=c.embed_dropout,
        )  # fmt: skip
        if self.stem.out_features == 0:
            raise ValueError(
                "a TabularMLP needs inputs: num_numeric, num_binary or cardinalities (a table's "
                "RowEncoder gives them as bundle.model_inputs)"
            )
        mlp = MLP(
            MLPConfig(
                in_channels=self.stem.out_features, image_size=1, num_classes=c.num_classes,
                width=c.width, depth=c.depth, dropout=c.dropout, norm=c.norm, act=c.act,
            )
        )  # fmt: skip
        self.body, self.head = mlp.body, mlp.head
        self.register_buffer("target_mean", torch.tensor(float(c.target_mean)))
        self.register_buffer("target_std", torch.tensor(float(c.target_std)))
        self.scaled = (c.target_mean, c.target_std) != (0.0, 1.0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # (B, F) -> (B, width)
        return self.body(self.stem(x))

    def forward_head(self, feats: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        # (B, width) -> (B, K)
        if pre_logits:
            return feats
        out = self.head(feats)
        return out * self.target_std + self.target_mean if self.scaled else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, F) -> (B, K)
        return self.forward_head(self.forward_features(x))


def _from_config(config: TabularMLPConfig) -> TabularMLP:
    """The model of ``config``, with lists (from YAML or JSON) as the tuples a frozen config holds."""
    c = config
    return TabularMLP(
        dataclasses.replace(
            c,
            cardinalities=tuple(c.cardinalities),
            mean=tuple(c.mean) if c.mean is not None else None,
            std=tuple(c.std) if c.std is not None else None,
            edges=tuple(tuple(e) for e in c.edges) if c.edges is not None else None,
        )
    )


register_family(TabularMLPConfig, _from_config)
register_variant(
    "tabular_mlp",
    TabularMLPConfig,
    "MLP for tables: standardized numbers, embedded categories, two hidden layers of 256 units",
)
register_variant(
    "tabular_mlp_tiny", TabularMLPConfig, "A one-hidden-layer, 16-unit table MLP for tests and CI",
    width=16, depth=1, dropout=0.0, norm="layer",
)  # fmt: skip
