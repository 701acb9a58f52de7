"""Attention rollout (Abnar & Zuidema 2020): how much each input token feeds the model's output.

Every attention layer's weights (averaged over heads) get the residual path added, ``0.5 A + 0.5 I``,
rows renormalized, and the layers are multiplied from the first to the last. The row of the token
the head reads (the class token, or the mean of all rows for mean-pooled models) gives one score
per input token; for a ViT the patch scores are laid on the image grid.

The weights are caught while ``F.scaled_dot_product_attention`` runs (every attention module of
ember's zoo calls it): inside :func:`recording_attention` the call is computed explicitly and its
weights are kept. It is a context manager because it patches the function for the process.

Example:
    >>> import torch
    >>> from ember.models import create
    >>> vit = create("vit_tiny", in_channels=1, image_size=8, patch_size=4).eval()
    >>> attention_rollout(vit, torch.rand(2, 1, 8, 8)).attributions.shape
    torch.Size([2, 1, 8, 8])
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ember.responsible.attribution import Attribution, _targets


@contextlib.contextmanager
def recording_attention() -> Iterator[list[torch.Tensor]]:
    """Within: every SDPA call computes its ``(B, H, T, S)`` weights explicitly and appends them."""
    original = F.scaled_dot_product_attention
    kept: list[torch.Tensor] = []

    def explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: Any = None,
                 dropout_p: float = 0.0, is_causal: bool = False, **_: Any) -> torch.Tensor:  # fmt: skip
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if is_causal:
            t, s = scores.shape[-2:]
            scores = scores.masked_fill(~torch.ones(t, s, dtype=torch.bool).tril(s - t), float("-inf"))
        if attn_mask is not None:
            scores = (
                scores.masked_fill(~attn_mask, float("-inf"))
                if attn_mask.dtype == torch.bool
                else scores + attn_mask
            )
        weights = scores.softmax(-1)
        kept.append(weights.detach())
        return weights @ v

    F.scaled_dot_product_attention = explicit  # type: ignore[assignment]
    try:
        yield kept
    finally:
        F.scaled_dot_product_attention = original


def rollout(weights: list[torch.Tensor]) -> torch.Tensor:
    """``[(B, H, T, T)] * layers`` -> ``(B, T, T)`` rolled-out attention."""
    result = None
    for w in weights:
        a = w.mean(1)  # (B, T, T)
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1])
        a = a / a.sum(-1, keepdim=True)
        result = a if result is None else a @ result
    if result is None:
        raise ValueError(
            "the model ran no attention (no scaled_dot_product_attention call): rollout needs a transformer"
        )
    return result


def attention_rollout(
    model: nn.Module, inputs: torch.Tensor, target: torch.Tensor | int | None = None
) -> Attribution:
    """Rollout scores: ``(B, C, H, W)`` images -> ``(B, 1, H, W)``; ``(B, T)`` tokens -> ``(B, T)``.

    Images: the patch tokens (the last ``h*w`` of the sequence) on their grid, upsampled. The class
    token's row is used when the sequence has one token more than the patches, else the mean row.
    """
    target = _targets(model, inputs, target)
    with torch.no_grad(), recording_attention() as kept:
        model(inputs)
    selfattn = [w for w in kept if w.shape[-1] == w.shape[-2]]
    rolled = rollout(selfattn)  # (B, T, T)
    t = rolled.shape[-1]
    if inputs.dim() == 4:
        side = int(math.isqrt(t - 1)) if math.isqrt(t - 1) ** 2 == t - 1 else int(math.isqrt(t))
        patches = side * side
        row = rolled[:, 0] if t == patches + 1 else rolled.mean(1)
        grid = row[:, t - patches :].reshape(-1, 1, side, side)
        maps = F.interpolate(grid, size=inputs.shape[2:], mode="bilinear", align_corners=False)
        return Attribution(maps, target)
    row = rolled.mean(1) if t == inputs.shape[1] else rolled[:, 0]
    return Attribution(row[:, -inputs.shape[1] :], target)


__all__ = ["attention_rollout", "recording_attention", "rollout"]
