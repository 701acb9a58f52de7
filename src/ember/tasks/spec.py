"""What a trained model is, written down: the :class:`ModelSpec` every run and every bundle carries.

A spec names how to rebuild the model without pickle (a zoo name and its builder kwargs, or a
user's importable entry point), which task trained it (name and options), what one input looks like
(:class:`InputSpec`: kind, shape, dtype, value range, vocabulary), the class names, and which side
files go with it (a tokenizer, a tabular preprocessing). Stages read a run's or a bundle's spec and
ask its task what to do; they never rebuild it from the data or switch on a family's name.

The spec is recorded when a run starts (``spec.json`` in the run folder) and copied into every
bundle's ``meta.json``; :meth:`ModelSpec.to_dict` / :meth:`ModelSpec.from_dict` round-trip it
through JSON, and a malformed one is a :class:`SpecError` naming the field.

Example:
    >>> spec = ModelSpec(model="cnn_tiny", kwargs={"in_channels": 1, "num_classes": 10, "image_size": 8},
    ...                  task="classification", inputs=InputSpec("image", (1, 8, 8), value_range=(0.0, 1.0)),
    ...                  classes=[str(i) for i in range(10)])
    >>> ModelSpec.from_dict(spec.to_dict()) == spec
    True
    >>> spec.inputs.example(2).shape
    torch.Size([2, 1, 8, 8])
"""

from __future__ import annotations

import importlib
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch
from torch import nn

InputKind = Literal["image", "table", "tokens", "vector"]
KINDS: tuple[str, ...] = ("image", "table", "tokens", "vector")


class SpecError(ValueError):
    """A model spec that cannot be used: the message names the field and what was expected."""


class NotApplicable(Exception):
    """A stage that does not apply to a model's task; the message says what to do instead.

    Raised by a task's lifecycle method (or by :func:`ember.tasks.contract.require` when the task
    lacks it). The CLI prints it as one line; the server answers it with a 4xx JSON reason.
    """


@dataclass(frozen=True)
class InputSpec:
    """One example as the model takes it (without the batch dimension).

    ``kind`` says how outside data becomes this tensor: ``image`` (``(C, H, W)`` float32 in
    ``value_range``, from PNG/JPEG bytes or nested lists), ``table`` (``(F,)`` float32 columns,
    named by ``columns``), ``tokens`` (``(T,)`` int64 ids below ``vocab_size``, from text through the
    run's tokenizer; ``T`` is the longest context) or ``vector`` (any other float32 tensor).
    """

    kind: InputKind
    """image, table, tokens or vector (see the class docstring)."""
    shape: tuple[int, ...]
    """One input's shape without the batch: (C, H, W), (F,), (T,) ..."""
    dtype: Literal["float32", "int64"] = "float32"
    """float32 (images, tables, vectors) or int64 (token ids)."""
    value_range: tuple[float, float] | None = None
    """Inclusive bounds on every value (images: (0, 1)), or None for any finite value."""
    vocab_size: int | None = None
    """Token ids are below this (tokens only)."""
    pad_id: int | None = None
    """The padding id of token inputs, when the model masks padding."""
    columns: tuple[str, ...] | None = None
    """Column names of a table, in order."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SpecError(f"inputs.kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        if not self.shape or any(not isinstance(d, int) or d < 1 for d in self.shape):
            raise SpecError(f"inputs.shape must be positive integers; got {self.shape!r}")
        if self.dtype not in ("float32", "int64"):
            raise SpecError(f"inputs.dtype must be float32 or int64; got {self.dtype!r}")
        if (self.kind == "tokens") != (self.dtype == "int64"):
            raise SpecError(f"token inputs are int64 and only they are; got kind {self.kind}, {self.dtype}")
        if self.kind == "tokens" and not self.vocab_size:
            raise SpecError("token inputs need inputs.vocab_size")
        if self.value_range is not None and not self.value_range[0] <= self.value_range[1]:
            raise SpecError(f"inputs.value_range must be (low, high); got {self.value_range}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.int64 if self.dtype == "int64" else torch.float32

    def example(self, n: int = 2, *, seed: int = 0) -> torch.Tensor:
        """``n`` valid inputs, drawn with ``seed``: what export traces and plans time.

        Token ids avoid the padding id and the first few ids (specials in ember's tokenizers).
        """
        g = torch.Generator().manual_seed(seed)
        shape = (n, *self.shape)
        if self.kind == "tokens":
            assert self.vocab_size is not None
            low = min(4, self.vocab_size - 1)
            return torch.randint(low, self.vocab_size, shape, generator=g)
        if self.value_range is not None:
            lo, hi = self.value_range
            return lo + (hi - lo) * torch.rand(shape, generator=g)
        return torch.randn(shape, generator=g)


@dataclass(frozen=True)
class ModelSpec:
    """How to rebuild a trained model and what its task and inputs are (see the module docstring)."""

    task: str
    """The registered task name (`ember list tasks`)."""
    inputs: InputSpec
    """One input's description."""
    model: str | None = None
    """The zoo name the model was built by (`ember list models`), or None for a user's own module."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Every builder keyword the model was built with (data-filled ones included)."""
    entry_point: str | None = None
    """``package.module:callable`` that builds a user's own module from ``kwargs`` (its code is named
    by this, not sealed in the bundle: the same code must be importable where the bundle is loaded)."""
    task_options: dict[str, Any] = field(default_factory=dict)
    """The task's JSON-able options (a tokenizer is a side file, not an option)."""
    classes: list[str] | None = None
    """Class names, index i naming output i, or None."""
    tokenizer: bool = False
    """A ``tokenizer.json`` goes with the weights (text models)."""
    preprocess: dict[str, Any] | None = None
    """A data-side preprocessing (e.g. a table's column encoder) applied before the model, as JSON."""
    transforms: list[str] = field(default_factory=list)
    """Structure transforms (`ember.nn.structure`) applied after building, in order (DP-SGD's
    BatchNorm → GroupNorm)."""

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task:
            raise SpecError(f"spec.task must name a task; got {self.task!r}")
        if self.model is not None and self.entry_point is not None:
            raise SpecError("a spec names a zoo model or an entry point, not both")
        if self.entry_point is not None and ":" not in self.entry_point:
            raise SpecError(f"spec.entry_point must be 'package.module:callable'; got {self.entry_point!r}")

    def row_encoder(self) -> Any:
        """The table's fitted `~ember.data.tabular.RowEncoder` when ``preprocess`` is one, else None."""
        if not self.preprocess or self.preprocess.get("kind") != "row-encoder":
            return None
        from ember.data.tabular import RowEncoder

        return RowEncoder.from_spec(self.preprocess)

    @property
    def rebuildable(self) -> bool:
        """The model can be rebuilt from code (zoo or entry point), so weights alone restore it."""
        return self.model is not None or self.entry_point is not None

    def build(self) -> nn.Module:
        """A fresh (untrained) model from the zoo name or the entry point, with ``kwargs``.

        Raises:
            SpecError: nothing to build it from, or the entry point cannot be imported or called.
        """
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in self.kwargs.items()}
        if self.model is not None:
            from ember import models

            try:
                return self._restructured(models.create(self.model, **kwargs))
            except (KeyError, TypeError, ValueError) as e:
                raise SpecError(f"model '{self.model}' cannot be built with {self.kwargs}: {e}") from None
        if self.entry_point is None:
            raise SpecError(
                "this model was not built by ember's zoo and names no entry point, so it cannot be "
                "rebuilt from weights; give the Trainer spec=ModelSpec(entry_point='pkg.mod:build', ...) "
                "or serve its ONNX graph"
            )
        module_name, _, attr = self.entry_point.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as e:
            raise SpecError(
                f"entry point {self.entry_point} cannot be imported here ({e}); the model's code must be "
                "installed where it is loaded"
            ) from None
        model = target(**kwargs)
        if not isinstance(model, nn.Module):
            raise SpecError(
                f"entry point {self.entry_point} returned {type(model).__name__}, not an nn.Module"
            )
        return self._restructured(model)

    def _restructured(self, model: nn.Module) -> nn.Module:
        """``model`` after the spec's structure transforms (`ember.nn.structure`)."""
        if self.transforms:
            from ember.nn import structure

            structure.apply(model, self.transforms)
        return model

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists)."""
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: Any) -> ModelSpec:
        """The spec of :meth:`to_dict`'s output; :class:`SpecError` naming what is wrong."""
        if not isinstance(data, dict):
            raise SpecError(f"a model spec is a JSON object; got {type(data).__name__}")
        try:
            raw_inputs = dict(data["inputs"])
            raw_inputs["shape"] = tuple(int(d) for d in raw_inputs["shape"])
            for key in ("value_range", "columns"):
                if raw_inputs.get(key) is not None:
                    raw_inputs[key] = tuple(raw_inputs[key])
            inputs = InputSpec(**raw_inputs)
            known = {f for f in cls.__dataclass_fields__ if f != "inputs"}
            unknown = set(data) - known - {"inputs"}
            if unknown:
                raise SpecError(f"unknown spec fields {sorted(unknown)}; this ember knows {sorted(known)}")
            return cls(inputs=inputs, **{k: v for k, v in data.items() if k != "inputs"})
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, SpecError):
                raise
            raise SpecError(f"malformed model spec: {type(e).__name__}: {e}") from None

    def with_model(self, model: str, kwargs: dict[str, Any]) -> ModelSpec:
        """This spec naming another zoo model (a distilled student, say)."""
        return replace(self, model=model, kwargs=dict(kwargs), entry_point=None)


def infer_inputs(x: torch.Tensor, *, vocab_size: int | None = None) -> InputSpec:
    """The :class:`InputSpec` of a batch ``x`` of examples (a user's own data, seen by the Trainer).

    Integer batches are token ids (``vocab_size``: the model's, else one past the largest id seen);
    float batches of rank 4 are images (range (0, 1) when every value lies in it), of rank 2 tables,
    anything else a vector.

    Example:
        >>> infer_inputs(torch.rand(4, 1, 8, 8)).kind, infer_inputs(torch.randint(0, 9, (4, 16))).kind
        ('image', 'tokens')
    """
    shape = tuple(int(d) for d in x.shape[1:])
    if not x.is_floating_point():
        vocab = vocab_size or int(x.max()) + 1 if x.numel() else vocab_size or 1
        return InputSpec("tokens", shape, "int64", vocab_size=int(vocab))
    if x.ndim == 4:
        unit = bool(x.numel()) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        return InputSpec("image", shape, value_range=(0.0, 1.0) if unit else None)
    return InputSpec("table" if x.ndim == 2 else "vector", shape)


def zoo_origin(model: nn.Module) -> tuple[str, dict[str, Any]] | None:
    """The zoo name and builder kwargs ``ember.models.create`` built ``model`` with, if it did."""
    origin = getattr(model, "_ember_origin", None)
    return (origin[0], dict(origin[1])) if origin is not None else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"a model spec holds only finite numbers; got {value}")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise SpecError(f"a model spec holds JSON values only; got {type(value).__name__} {value!r}")


__all__ = ["KINDS", "InputSpec", "ModelSpec", "NotApplicable", "SpecError", "infer_inputs", "zoo_origin"]
