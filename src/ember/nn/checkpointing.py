"""Activation checkpointing as a model → model transform: blocks recompute activations in backward.

``apply(model)`` makes each transformer block's forward run under
``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`` while training: the block keeps
only its inputs, and its inner activations are recomputed during backward. Peak memory falls by
roughly the blocks' saved activations; the loss and gradients are the same (dropout masks are
replayed, autocast is kept); a step costs about one extra forward of the blocks.

A block is an instance of ``block_types`` when given; by default ember's `TransformerBlock`, or any
module held in an ``nn.ModuleList`` / ``nn.Sequential`` that contains an attention layer (ember's,
or ``nn.MultiheadAttention``), so torch's ``nn.TransformerEncoderLayer`` stacks and a user's own
GPT blocks count too. The blocks' parameters, ``state_dict`` keys and classes are unchanged; only
their ``forward`` is replaced, on the instance (`remove` restores it). ``Trainer`` applies it when
``trainer.activation_checkpointing`` is true.

Example:
    >>> import torch
    >>> from ember import models
    >>> from ember.nn import checkpointing
    >>> model = checkpointing.apply(models.create("gpt_tiny", vocab_size=32))
    >>> len(checkpointing.checkpointed_blocks(model))
    2
    >>> model(torch.randint(0, 32, (2, 8))).sum().backward()
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ember.nn.attention import MultiHeadSelfAttention
from ember.nn.causal import CrossAttention, SelfAttention
from ember.nn.transformer import TransformerBlock

ATTENTION: tuple[type[nn.Module], ...] = (
    SelfAttention,
    CrossAttention,
    MultiHeadSelfAttention,
    nn.MultiheadAttention,
)
_MARK = "_ember_checkpointed"


def _run_checkpointed(block: nn.Module, *args: Any, **kwargs: Any) -> Any:
    forward = type(block).forward
    if block.training and torch.is_grad_enabled():
        return checkpoint(forward, block, *args, use_reentrant=False, **kwargs)
    return forward(block, *args, **kwargs)  # eval / inference: nothing to save, nothing to recompute


def _is_block(module: nn.Module, parent: nn.Module | None, block_types: tuple[type, ...]) -> bool:
    if block_types:
        return isinstance(module, block_types)
    if isinstance(module, TransformerBlock):
        return True
    if isinstance(module, ATTENTION) or not isinstance(parent, nn.ModuleList | nn.Sequential):
        return False
    return any(isinstance(m, ATTENTION) for m in module.modules())


def find_blocks(model: nn.Module, block_types: Sequence[type] = ()) -> list[nn.Module]:
    """The outermost modules of ``model`` that count as blocks (see the module docstring)."""
    types = tuple(block_types)
    if _is_block(model, None, types):
        return [model]
    found: list[nn.Module] = []

    def visit(parent: nn.Module) -> None:
        for child in parent.children():
            if _is_block(child, parent, types):
                found.append(child)
            else:
                visit(child)

    visit(model)
    return found


def apply(model: nn.Module, *, block_types: Sequence[type] = ()) -> nn.Module:
    """Checkpoint the activations of every block of ``model`` (in place; returns ``model``).

    Args:
        model: any module made of blocks.
        block_types: classes to treat as blocks (default: see the module docstring).

    Returns:
        ``model``, its blocks now recomputing their activations during backward.

    Raises:
        ValueError: no block was found (say which classes are blocks with ``block_types``).
    """
    blocks = find_blocks(model, block_types)
    if not blocks:
        raise ValueError(
            f"activation checkpointing found no transformer blocks in {type(model).__name__}; "
            "name your block classes: ember.nn.checkpointing.apply(model, block_types=(MyBlock,))"
        )
    for block in blocks:
        if not getattr(block, _MARK, False):
            # an instance attribute shadows the class's forward; nn.Module.__call__ (and its hooks)
            # still run as usual, and deepcopy rebinds the partial to the copied block
            block.forward = functools.partial(_run_checkpointed, block)
            setattr(block, _MARK, True)
    return model


def remove(model: nn.Module) -> nn.Module:
    """Undo `apply`: every block runs its ordinary forward again."""
    for module in model.modules():
        if getattr(module, _MARK, False):
            del module.forward
            delattr(module, _MARK)
    return model


def checkpointed_blocks(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that `apply` has wrapped."""
    return [m for m in model.modules() if getattr(m, _MARK, False)]


__all__ = ["ATTENTION", "apply", "checkpointed_blocks", "find_blocks", "remove"]
