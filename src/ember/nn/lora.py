"""LoRA (Hu et al., 2021) as a model → model transform: low-rank adapters on chosen ``nn.Linear`` layers.

``apply(model, rank=8)`` replaces each targeted ``nn.Linear`` by a `LoRALinear`, whose output is
``base(x) + (alpha / rank) * B(A(dropout(x)))`` with ``A`` (rank × in) random and ``B`` (out × rank)
zero, so the adapted model starts out computing exactly what it computed before. Every parameter
but the adapters is frozen: training then moves ``rank * (in + out)`` numbers per layer instead of
``in * out``. Make a new head trainable again with ``ember.train.finetune.unfreeze(model, ["head"])``.

For export, `merge` folds each adapter into its weight (``W + (alpha / rank) * B @ A``) and puts a
plain ``nn.Linear`` back, so the result has the original model's classes and ``state_dict`` names.
``LoRALinear.merge_`` / ``unmerge_`` do the same in place and back, keeping the adapters.

Example:
    >>> import torch
    >>> from ember import models
    >>> from ember.nn import lora
    >>> model = models.create("gpt_tiny", vocab_size=16)
    >>> ids = torch.randint(0, 16, (2, 8))
    >>> before = model(ids)
    >>> model = lora.apply(model, rank=4, targets=["blocks.*.attn.qkv"])
    >>> torch.equal(model(ids), before), len(lora.lora_layers(model))
    (True, 2)
    >>> plain = lora.merge(model)
    >>> type(plain.blocks[0].attn.qkv).__name__
    'Linear'
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ember._patterns import check_patterns, matches

__all__ = ["LoRALinear", "adapter_state_dict", "apply", "lora_layers", "merge"]

ADAPTER_NAMES = ("lora_a", "lora_b")


class LoRALinear(nn.Module):
    """An ``nn.Linear`` plus a trainable low-rank update.

    Args:
        base: the layer to adapt (kept as ``self.base``; its weights are not copied).
        rank: r, the rank of the update.
        alpha: the update is scaled by ``alpha / rank`` (so changing r keeps the step size).
        dropout: dropout on the adapter's input while training.

    Example:
        >>> layer = LoRALinear(nn.Linear(8, 4), rank=2)
        >>> x = torch.randn(3, 8)
        >>> torch.equal(layer(x), layer.base(x))  # B starts at zero
        True
    """

    def __init__(self, base: nn.Linear, *, rank: int, alpha: float = 16.0, dropout: float = 0.0) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1; got {rank}")
        self.base = base
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        weight = base.weight
        self.lora_a = nn.Parameter(
            torch.empty(rank, base.in_features, dtype=weight.dtype, device=weight.device)
        )
        self.lora_b = nn.Parameter(
            torch.zeros(base.out_features, rank, dtype=weight.dtype, device=weight.device)
        )
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear's own init (and the paper's)
        self.dropout = nn.Dropout(dropout)
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        # (..., in) -> (..., r) -> (..., out): two thin matmuls, never the full (out, in) update
        return out + (self.dropout(x) @ self.lora_a.T @ self.lora_b.T) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """The (out, in) update this adapter adds to ``base.weight``."""
        return (self.lora_b @ self.lora_a) * self.scaling

    @torch.no_grad()
    def merge_(self) -> LoRALinear:
        """Fold the update into ``base.weight`` (in place); forward then skips the adapter."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True
        return self

    @torch.no_grad()
    def unmerge_(self) -> LoRALinear:
        """Undo `merge_`: take the update out of ``base.weight`` again."""
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False
        return self

    @torch.no_grad()
    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing what this layer computes (the update folded in)."""
        base = self.base
        layer = nn.Linear(
            base.in_features,
            base.out_features,
            bias=base.bias is not None,
            device=base.weight.device,
            dtype=base.weight.dtype,
        )
        layer.weight.copy_(base.weight if self.merged else base.weight + self.delta_weight())
        if base.bias is not None:
            layer.bias.copy_(base.bias)
        layer.weight.requires_grad_(base.weight.requires_grad)
        return layer

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, merged={self.merged}"


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def apply(
    model: nn.Module,
    *,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: Sequence[str] = ("blocks",),
    freeze: bool = True,
) -> nn.Module:
    """Wrap the targeted ``nn.Linear`` layers of ``model`` in `LoRALinear` (in place; returns ``model``).

    Args:
        model: any module.
        rank, alpha, dropout: as `LoRALinear`.
        targets: module-name patterns (``blocks.*.attn.qkv``; ``blocks`` covers every Linear
            inside); only ``nn.Linear`` layers among the matches are wrapped.
        freeze: freeze every parameter that is not an adapter (the base weights, embeddings, norms,
            heads); unfreeze what should still train afterwards.

    Returns:
        ``model``, its targeted layers now `LoRALinear`; its output is unchanged until it trains.

    Raises:
        ValueError: a target pattern matches no ``nn.Linear`` (the message suggests a close name).
    """
    wrapped = {f"{name}.base" for name in lora_layers(model)}
    linears = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name not in wrapped
    ]
    check_patterns(linears, targets, "LoRA target", among="nn.Linear layer")
    for name in linears:
        if any(matches(name, pattern) for pattern in targets):
            base = model.get_submodule(name)
            assert isinstance(base, nn.Linear)
            _replace(model, name, LoRALinear(base, rank=rank, alpha=alpha, dropout=dropout))
    if freeze:
        for name, p in model.named_parameters():
            p.requires_grad_(name.rsplit(".", 1)[-1] in ADAPTER_NAMES)
    return model


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Name → `LoRALinear` of every adapted layer of ``model``."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapters' tensors (``*.lora_a``, ``*.lora_b``): a few percent of the model, to ship alone."""
    return {k: v for k, v in model.state_dict().items() if k.rsplit(".", 1)[-1] in ADAPTER_NAMES}


def merge(model: nn.Module) -> nn.Module:
    """Replace every `LoRALinear` by a plain ``nn.Linear`` with its update folded in (in place).

    The result has the un-adapted model's layers and ``state_dict`` names, ready to save or export.
    """
    for name, layer in lora_layers(model).items():
        _replace(model, name, layer.to_linear())
    return model
