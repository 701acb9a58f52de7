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
``answers_prompt``  whether that text answers the prompt (a translator) or    False
                    continues it (a language model)
``protect``         ``(metric, "max" | "min")`` a compressed variant must     ``(headline, mode)``
                    keep
``checks``          names of the run checks that apply                        ``("overfitting",)``
``distill_loss``    ``(student_out, teacher_out, target) -> loss`` for        NotApplicable
                    distillation
``evaluation``      ``(keep=True)``: an evaluation that also keeps what       ``task.evaluation()``
                    ``evidence`` and ``report_items`` read
``evidence``        ``(evaluation, data, *, n_resamples) -> Evidence``: the   None: metrics without
                    metrics as weighted statistics over the units the         intervals
                    bootstrap resamples (examples, images, blocks of text)
``baselines``       ``(train, data, evaluation, spec, *, seed, n_resamples)`` ``[]``
                    ``-> [BaselineEvidence]`` fitted on ``train``, scored on
                    the evaluated units
``report_items``    ``(evaluation, data, spec) -> [ReportItem]`` (`ember.     ``[]``
                    tasks.items`): what the report shows beyond metrics
``human_texts``     ``(evaluation, spec) -> [{"output", "reference"[,         NotApplicable
                    "input"]}]`` per evaluated example, for rating sheets
``sample``          ``(model, n, *, labels, prompt, generator, **options)``   NotApplicable
                    ``-> (n, C, H, W)`` images in [0, 1] (``/v1/generate``
                    as PNG, ``ember generate``, the report's sample grid)
``sample_classes``  ``(model) -> int``: how many classes ``labels`` may name  0
``report_samples``  ``(model, spec, *, seed) -> (images, nrow, caption)``:    a grid of ``sample``:
                    the grid the report shows                                 a column per class
``profile_inputs``  whether a server's requests are the training inputs, so a  True
                    drift profile of them applies (False: a sampler's)
``instead``         ``{stage: advice}``: what to do where a stage does not    the stage's own advice
                    apply (``"check.<name>"`` for a check; ``"eval"``: what
                    else measures the model, said beside its metrics)
=================== ======================================================= =========================

``data`` is the evaluated split as the run gives it (`ember.recipe.LoadedRun.split`): a dataset,
``ArrayData`` or a ready loader, in the order the evaluation saw it; ``train`` the run's training
split. A member that cannot answer for the data at hand raises :class:`NotApplicable` with why.

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

import inspect
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ember.tasks.spec import ModelSpec, NotApplicable

CHECKS = ("overfitting", "leakage", "shift", "imbalance")
"""Every run check ember has (``ember check``); a task's ``checks`` names those that apply to it."""
CHECK_NEEDS = {
    "overfitting": "a headline metric on the training and validation splits",
    "leakage": "inputs compared example by example across splits (images, tables, windows of tokens)",
    "shift": "inputs of one fixed shape whose distributions two splits can be tested for",
    "imbalance": "one class label per example",
}
"""What each check needs of a task's data: the reason given where a task does not take it."""


def task_name(task: Any) -> str:
    """The task's registered name when it has one, else its class name (for messages)."""
    origin = getattr(task, "_ember_origin", None)  # noted by ember.tasks.create
    return str(getattr(task, "name", None) or (origin[0] if origin else None) or type(task).__name__)


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


NO_TEXT = "its model does not produce text; use /v1/predict"
"""The advice when text generation does not apply (the task has no ``generate_text``)."""


def generate_text(task: Any, model: nn.Module, tokenizer: Any, prompt: str, **options: Any) -> Iterator[str]:
    """Pieces of text continuing (or answering) ``prompt``, as they decode."""
    own = require(task, "generate_text", "text generation", NO_TEXT)
    return iter(own(model, tokenizer, prompt, **options))


def answers_prompt(task: Any) -> bool:
    """Whether :func:`generate_text`'s pieces answer the prompt (a translation) rather than continue it."""
    return bool(getattr(task, "answers_prompt", False))


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


def inapplicable_checks(task: Any) -> dict[str, str]:
    """The checks of :data:`CHECKS` that do not apply to ``task``, each with the reason (the task's
    own ``instead["check.<name>"]`` when it gives one)."""
    applies = applicable_checks(task)
    own = getattr(task, "instead", None) or {}
    return {
        c: own.get(f"check.{c}") or f"task '{task_name(task)}' does not take it (it needs {CHECK_NEEDS[c]})"
        for c in CHECKS
        if c not in applies
    }


NO_IMAGES = "its model does not make images; use /v1/predict (or /v1/generate for a text model)"
"""The advice when image generation does not apply (the task has no ``sample``)."""
_SAMPLE_ARGS = ("labels", "prompt", "generator")


def profiles_inputs(task: Any) -> bool:
    """Whether serving ``task``'s model takes inputs like its training data (a drift profile applies)."""
    return bool(getattr(task, "profile_inputs", True))


def makes_images(task: Any) -> bool:
    """Whether ``task`` samples images (has ``sample``): what chooses /v1/generate's answer."""
    return callable(getattr(task, "sample", None))


def sample_options(task: Any) -> tuple[str, ...]:
    """The sampler's own keyword options (a diffusion task's ``sampler``, ``steps``, ``eta``,
    ``guidance``); ``()`` for a task without ``sample`` or without options."""
    import inspect

    own = getattr(task, "sample", None)
    if own is None:
        return ()
    params = inspect.signature(own).parameters
    return tuple(
        name
        for name, p in params.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in _SAMPLE_ARGS
    )


def image_classes(task: Any, model: nn.Module) -> int:
    """How many classes a request may name for ``model``'s images (0: it takes no class)."""
    own = getattr(task, "sample_classes", None)
    return int(own(model)) if own is not None else 0


def generate_images(
    task: Any,
    model: nn.Module,
    n: int,
    *,
    labels: torch.Tensor | None = None,
    prompt: str | list[str] | None = None,
    seed: int = 0,
    **options: Any,
) -> torch.Tensor:
    """``n`` images, (n, C, H, W) float in [0, 1], the same for the same ``seed``.

    Raises:
        NotApplicable: the task makes no images.
        ValueError: an option the sampler does not take (naming those it takes), or labels or a
            prompt the model cannot take.
    """
    own = require(task, "sample", "image generation", NO_IMAGES)
    takes = sample_options(task)
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise ValueError(
            f"task '{task_name(task)}' samples with no option {', '.join(unknown)}; "
            f"it takes: {', '.join(takes) or 'none'}"
        )
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    generator = torch.Generator(device).manual_seed(seed)
    return own(model, n, labels=labels, prompt=prompt, generator=generator, **options)


def report_samples(
    task: Any, model: nn.Module, spec: ModelSpec, *, seed: int = 0
) -> tuple[torch.Tensor, int, str]:
    """The grid of samples the report shows: ``(images, images a row, caption)``.

    Default: 64 images, or 8 of each class (a column per class) for a class-conditional model.
    """
    own = getattr(task, "report_samples", None)
    if own is not None:
        images, nrow, caption = own(model, spec, seed=seed)
        return images, int(nrow), str(caption)
    classes = image_classes(task, model)
    if classes:
        labels = torch.arange(8 * classes) % classes
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        images = generate_images(task, model, len(labels), labels=labels.to(device), seed=seed)
        names = ", ".join((spec.classes or [str(k) for k in range(classes)])[:classes])
        return images, classes, f"8 samples of each class, a column each ({names}); seed {seed}"
    return generate_images(task, model, 64, seed=seed), 8, f"64 samples; seed {seed}"


def evaluation(task: Any, *, keep: bool = False) -> Any:
    """A fresh evaluation of ``task``; ``keep`` asks it to also keep what :func:`evidence`,
    :func:`baselines` and :func:`report_items` read (a task whose ``evaluation`` takes no ``keep``
    keeps what it always keeps)."""
    make = task.evaluation
    if keep and "keep" in inspect.signature(make).parameters:
        return make(keep=True)
    return make()


def evidence(task: Any, evaluation: Any, data: Any, *, n_resamples: int = 1000) -> Any:
    """The evaluation as :class:`~ember.metrics.statistics.Evidence` (statistics over resampling
    units), or None when the task gives none: its metrics are then shown without intervals.

    ``n_resamples`` is how often the units will be redrawn, so a costly statistic can stand aside.
    """
    own = getattr(task, "evidence", None)
    return own(evaluation, data, n_resamples=n_resamples) if own is not None else None


def baselines(
    task: Any,
    train: Any,
    data: Any,
    evaluation: Any,
    spec: ModelSpec,
    *,
    seed: int = 0,
    n_resamples: int = 1000,
) -> list[Any]:
    """The task's baselines (:class:`~ember.metrics.statistics.BaselineEvidence`), fitted on the
    ``train`` split and scored on the units of ``evaluation``; ``[]`` when the task has none."""
    own = getattr(task, "baselines", None)
    if own is None:
        return []
    return list(own(train, data, evaluation, spec, seed=seed, n_resamples=n_resamples))


def report_items(task: Any, evaluation: Any, data: Any, spec: ModelSpec) -> list[Any]:
    """What the report shows of the evaluation beyond its metrics (`ember.tasks.items`); ``[]``."""
    own = getattr(task, "report_items", None)
    return list(own(evaluation, data, spec)) if own is not None else []


def human_texts(task: Any, evaluation: Any, spec: ModelSpec) -> list[dict[str, str]]:
    """Per evaluated example, its ``output`` (and ``reference``, optionally ``input``) as text for a
    rating sheet; without ``input`` the sheet shows the example's own input."""
    own = require(
        task, "human_texts", "human rating", "its outputs have no text form to rate; rate its report instead"
    )
    return list(own(evaluation, spec))


def distill_loss(task: Any, student: Any, teacher: Any, target: Any) -> torch.Tensor:
    """The loss that trains ``student`` outputs toward ``teacher`` outputs (and the ``target``)."""
    own = require(
        task, "distill_loss", "distillation", "compress it with int8 or prune instead (--try int8,prune)"
    )
    return own(student, teacher, target)


__all__ = [
    "CHECKS",
    "CHECK_NEEDS",
    "NO_TEXT",
    "answers_prompt",
    "applicable_checks",
    "baselines",
    "decode",
    "distill_loss",
    "evaluation",
    "evidence",
    "example_inputs",
    "export_module",
    "generate_images",
    "generate_text",
    "image_classes",
    "makes_images",
    "profiles_inputs",
    "report_samples",
    "sample_options",
    "NO_IMAGES",
    "human_texts",
    "inapplicable_checks",
    "protected_metric",
    "report_items",
    "require",
    "task_name",
]
