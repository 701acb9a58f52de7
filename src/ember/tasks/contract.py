"""The lifecycle half of the task contract: what every stage after training asks a run's task.

The loop needs only :class:`~ember.tasks.base.Task` (``forward``, ``loss``, ``evaluation``). Every
later stage (eval, report, check, package, export, serve, compress, plan, generate) asks the task
through the functions here, never by the family's name. A task answers by having the member; a
task without it gets the documented default, or :class:`~ember.tasks.spec.NotApplicable` saying
what to do instead, so a user's own task works wherever the defaults fit.

=================== ======================================================= =========================
member              what it answers                                          without it
=================== ======================================================= =========================
``example_inputs``  ``(task, spec, n, seed) -> tuple`` of model arguments:  ``(spec.inputs.example(n),)``
                    what export traces, plan and compress time
``export_module``   ``(model, spec) -> nn.Module`` taking those tensors and   the model itself
                    returning a tensor or a tuple of tensors (no dicts)
``decode``          ``(outputs, spec) -> {field: per-item list}``: the JSON   ``{"outputs": rows}``
                    answer of ``/v1/predict`` (``outputs`` as
                    ``export_module`` returns them)
``generate_text``   ``(model, tokenizer, prompt, **options) -> Iterator[str]`` NotApplicable
                    pieces of text as they decode (``/v1/generate``, ``ember
                    generate``)
``protect``         ``(metric, "max" | "min")`` a compressed variant must     ``(headline, mode)``
                    keep
``checks``          names of the run checks that apply                        ``("overfitting",)``
``distill_loss``    ``(student_out, teacher_out, target) -> loss`` for        NotApplicable
                    distillation
=================== ======================================================= =========================

Example:
    >>> from ember.tasks import create
    >>> from ember.tasks.spec import InputSpec, ModelSpec
    >>> spec = ModelSpec(task="regression", inputs=InputSpec("table", (3,)))
    >>> task = create("regression")
    >>> [t.shape for t in example_inputs(task, spec, n=4)]
    [torch.Size([4, 3])]
    >>> protected_metric(task)
    ('mse', 'min')
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ember.tasks.spec import ModelSpec, NotApplicable

CHECKS = ("overfitting", "leakage", "shift", "imbalance")
"""Every run check ember has (``ember check``); a task's ``checks`` names those that apply to it."""


def task_name(task: Any) -> str:
    """The task's registered name when it has one, else its class name (for messages)."""
    return str(getattr(task, "name", None) or type(task).__name__)


def require(task: Any, member: str, stage: str, instead: str = "") -> Any:
    """``task.<member>``, or :class:`NotApplicable` saying that ``stage`` does not apply and why.

    ``instead`` is the advice when the task does not say itself; a task may name its own advice for
    a stage in ``task.instead[stage]``.
    """
    found = getattr(task, member, None)
    if found is not None:
        return found
    advice = (getattr(task, "instead", None) or {}).get(stage) or instead
    raise NotApplicable(
        f"{stage} does not apply to task '{task_name(task)}'" + (f": {advice}" if advice else "")
    )


def example_inputs(task: Any, spec: ModelSpec, n: int = 2, *, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """The model's arguments for ``n`` valid examples: what export traces and plans time."""
    own = getattr(task, "example_inputs", None)
    if own is not None:
        return tuple(own(spec, n, seed=seed))
    return (spec.inputs.example(n, seed=seed),)


def export_module(task: Any, model: nn.Module, spec: ModelSpec) -> nn.Module:
    """``model`` as a module of tensors in, a tensor or tuple of tensors out (export, serve, plan)."""
    own = getattr(task, "export_module", None)
    return own(model, spec) if own is not None else model


def decode(task: Any, outputs: Any, spec: ModelSpec) -> dict[str, Any]:
    """Per-item answers of a batch of ``outputs``: ``{field: list or array of length B}``.

    A task that cannot answer ``/v1/predict`` (a language model) raises :class:`NotApplicable`
    from its own ``decode``, with what to call instead.
    """
    own = getattr(task, "decode", None)
    if own is not None:
        return dict(own(outputs, spec))
    if not isinstance(outputs, torch.Tensor):
        raise NotApplicable(
            f"task '{task_name(task)}' returns {type(outputs).__name__} outputs and no decode(); "
            "give the task a decode(outputs, spec) method"
        )
    return {"outputs": np.ascontiguousarray(outputs.detach().float().cpu().numpy())}


def generate_text(task: Any, model: nn.Module, tokenizer: Any, prompt: str, **options: Any) -> Iterator[str]:
    """Pieces of text continuing (or answering) ``prompt``, as they decode."""
    own = require(
        task, "generate_text", "text generation", "its model does not produce text; use /v1/predict"
    )
    return iter(own(model, tokenizer, prompt, **options))


def protected_metric(task: Any) -> tuple[str, str]:
    """The metric a compressed variant must keep, and whether higher (``max``) is better."""
    own = getattr(task, "protect", None)
    if own is not None:
        name, mode = own
        return str(name), str(mode)
    return str(task.headline), str(task.mode)


def applicable_checks(task: Any) -> tuple[str, ...]:
    """The run checks (:data:`CHECKS`) that apply to ``task``."""
    own = getattr(task, "checks", None)
    return tuple(own) if own is not None else ("overfitting",)


def distill_loss(task: Any, student: Any, teacher: Any, target: Any) -> torch.Tensor:
    """The loss that trains ``student`` outputs toward ``teacher`` outputs (and the ``target``)."""
    own = require(
        task, "distill_loss", "distillation", "compress it with int8 or prune instead (--try int8,prune)"
    )
    return own(student, teacher, target)


__all__ = [
    "CHECKS",
    "applicable_checks",
    "decode",
    "distill_loss",
    "example_inputs",
    "export_module",
    "generate_text",
    "protected_metric",
    "require",
    "task_name",
]
