"""Explanations of a finished run's predictions: the methods that fit its inputs, each sanity-checked.

What is explained follows from the inputs and the model, never from a family's name:

- images ``(C, H, W)`` floats: integrated gradients (of the predicted class's probability),
  saliency, Grad-CAM when the model has a
  convolution, attention rollout when it runs attention;
- token ids ``(T,)``: integrated gradients on the token embeddings, attention rollout;
- table rows ``(F,)`` floats: integrated gradients and saliency per feature, named by the data's
  columns when it has them.

The model must output ``(B, K)`` class scores; anything else is not explained (one line says so).
Every method shown (and guided backpropagation, as the known failure) goes through the cascading
randomization check (:mod:`~ember.responsible.sanity`); integrated gradients report their
completeness error per input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import nn

from ember.responsible import attribution as A
from ember.responsible.columns import available
from ember.responsible.fairness_run import NotApplicableError
from ember.responsible.gradcam import grad_cam, last_conv
from ember.responsible.rollout import attention_rollout, recording_attention
from ember.responsible.sanity import SanityResult, cascading_randomization

SANITY_STEPS = 32  # integrated gradients inside the sanity check: one cascade runs it once per layer


@dataclass
class Explained:
    """One method's attributions for every input, and its sanity check."""

    name: str
    attributions: torch.Tensor
    completeness_error: torch.Tensor | None = None
    sanity: SanityResult | None = None


@dataclass
class RunExplanations:
    """What :func:`explain_run` returns."""

    run_id: str
    kind: str  # image, tokens or table
    indices: list[int]
    inputs: torch.Tensor
    labels: torch.Tensor
    predictions: torch.Tensor
    confidence: torch.Tensor
    classes: list[str]
    methods: dict[str, Explained]
    feature_names: list[str] | None = None
    tokens: list[list[str]] | None = None
    notes: list[str] = field(default_factory=list)

    def flagged(self) -> list[str]:
        """Methods that failed the sanity check."""
        return [n for n, m in self.methods.items() if m.sanity is not None and not m.sanity.passed]


def kind_of(inputs: torch.Tensor) -> str | None:
    """``image``, ``tokens`` or ``table`` for a batch of inputs, None for anything else."""
    if inputs.dim() == 4 and inputs.is_floating_point():
        return "image"
    if inputs.dim() == 2 and not inputs.is_floating_point():
        return "tokens"
    if inputs.dim() == 2:
        return "table"
    return None


def methods_for(
    model: nn.Module, inputs: torch.Tensor, kind: str, *, steps: int
) -> dict[str, Callable[..., A.Attribution]]:
    """The attribution methods that apply to this model and input kind, by display name."""
    if kind == "tokens":
        chosen: dict[str, Callable[..., A.Attribution]] = {
            "integrated gradients": partial(A.token_integrated_gradients, steps=min(steps, 64))
        }
    else:
        chosen = {
            "integrated gradients": partial(A.integrated_gradients, steps=steps, output="probability"),
            "saliency": A.saliency,
        }
    if kind == "image" and last_conv(model) is not None:
        chosen["Grad-CAM"] = grad_cam
    if kind in ("image", "tokens") and _runs_attention(model, inputs[:1]):
        chosen["attention rollout"] = attention_rollout
    return chosen


def _runs_attention(model: nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad(), recording_attention() as kept:
        model(x)
    return bool(kept)


def _sanity_version(name: str, method: Callable[..., A.Attribution]) -> Callable[..., A.Attribution]:
    if name == "integrated gradients" and isinstance(method, partial):
        return partial(method, steps=SANITY_STEPS)
    return method


def explain(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    steps: int = 200,
    sanity: bool = True,
    max_batch: int = A.MAX_BATCH,
) -> tuple[str, dict[str, Explained], list[str]]:
    """Attributions of every applicable method for ``inputs`` (see the module docstring).

    Returns:
        ``(kind, {method: Explained}, notes)``.
    """
    model.eval()
    kind = kind_of(inputs)
    with torch.no_grad():
        out = model(inputs[:1])
    if kind is None or out.dim() != 2:
        raise NotApplicableError(
            f"explanations cover classifiers of images, token ids or table rows; this model maps inputs "
            f"{tuple(inputs.shape[1:])} to outputs {tuple(out.shape[1:])}. For a language model, inspect "
            "its samples with `ember generate` instead"
        )
    notes: list[str] = []
    chosen = methods_for(model, inputs, kind, steps=steps)
    results: dict[str, Explained] = {}
    for name, method in chosen.items():
        kwargs = {"max_batch": max_batch} if name != "attention rollout" else {}
        attr = method(model, inputs, **kwargs)
        check = cascading_randomization(model, inputs, _sanity_version(name, method)) if sanity else None
        results[name] = Explained(name, attr.attributions, attr.completeness_error, check)
    if sanity and kind != "tokens" and any(isinstance(m, nn.ReLU) for m in model.modules()):
        check = cascading_randomization(model, inputs, A.guided_backprop)
        gb = A.guided_backprop(model, inputs)
        results["guided backprop"] = Explained("guided backprop", gb.attributions, None, check)
        notes.append("guided backprop is shown for the sanity check only: it is expected to fail it")
    if kind == "image" and "Grad-CAM" not in results:
        notes.append("no Grad-CAM: the model has no convolution (Grad-CAM is for CNNs)")
    return kind, results, notes


def explain_run(
    ref: str,
    indices: list[int],
    *,
    split: str = "test",
    steps: int = 200,
    sanity: bool = True,
    runs_dir: str | Path | None = None,
    max_batch: int = A.MAX_BATCH,
) -> RunExplanations:
    """Explain run ``ref``'s predictions on examples ``indices`` of ``split``."""
    from ember.recipe import load_run

    loaded = load_run(ref, runs_dir=runs_dir)
    record = loaded.record
    data = loaded.split(split)
    size = len(data)
    bad = [i for i in indices if not 0 <= i < size]
    if bad:
        raise ValueError(f"--input {bad[0]} is outside run {record.id}'s {split} split (0..{size - 1})")
    items = [data[i] for i in indices]
    inputs = torch.stack([torch.as_tensor(x) for x, _ in items]).cpu()
    labels = torch.stack([torch.as_tensor(y) for _, y in items]).cpu()
    model = loaded.model.cpu().eval()
    kind, methods, notes = explain(model, inputs, steps=steps, sanity=sanity, max_batch=max_batch)
    with torch.no_grad():
        probs = model(inputs).float().softmax(1)
    classes = loaded.classes or [str(c) for c in range(probs.shape[1])]
    result = RunExplanations(
        record.id, kind, list(indices), inputs, labels, probs.argmax(1), probs.max(1).values, classes, methods,
        notes=notes,
    )  # fmt: skip
    if kind == "table":
        encoder = loaded.spec.row_encoder()  # a table run's encoded features have names
        names = available(data) or (encoder.feature_names if encoder is not None else None)
        if names is not None and len(names) == inputs.shape[1]:
            result.feature_names = list(names)
    tokenizer = loaded.tokenizer
    if kind == "tokens" and tokenizer is not None:
        result.tokens = [[tokenizer.decode([int(t)]) for t in row] for row in inputs]
    return result


__all__ = ["Explained", "RunExplanations", "explain", "explain_run", "kind_of", "methods_for"]
