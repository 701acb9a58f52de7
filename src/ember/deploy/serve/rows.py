"""Table rows as JSON objects (``{"age": 39, "income": 5.2}``) → the model's ``(n, F)`` float inputs.

``/v1/predict`` takes a table model's items as lists of numbers (already encoded, in column order)
or, through this module, as objects keyed by column name:

- a spec with a ``preprocess`` (the data-side encoder a run trained with, as JSON) is decoded by
  the function registered for its ``preprocess["kind"]`` in :data:`ROW_DECODERS`: a factory
  ``(spec) -> decode(rows) -> (n, F) float32 tensor`` that raises ``ValueError`` naming the row and
  column at fault. A new encoder adds one entry there (its module imported inside the factory, so
  serving loads it only for models that use it);
- a spec that names its ``inputs.columns`` and has no preprocessing takes objects holding exactly
  those columns, each a finite number.

Example:
    >>> from ember.tasks.spec import InputSpec, ModelSpec
    >>> spec = ModelSpec(task="regression", inputs=InputSpec("table", (2,), columns=("a", "b")))
    >>> row_decoder(spec)([{"b": 2, "a": 1.5}]).tolist()
    [[1.5, 2.0]]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ember.tasks.spec import ModelSpec

RowDecoder = Callable[[Sequence[dict[str, Any]]], torch.Tensor]

ROW_DECODERS: dict[str, Callable[[ModelSpec], RowDecoder]] = {}
"""``preprocess["kind"]`` → factory of the decoder of its rows (see the module docstring)."""


def row_decoder(spec: ModelSpec | None) -> RowDecoder | None:
    """How rows given as JSON objects become inputs for ``spec``'s model; None: it takes none.

    Raises:
        ValueError: the spec's preprocessing is of a kind this ember cannot decode rows for.
    """
    if spec is None or spec.inputs.kind != "table":
        return None
    if spec.preprocess is not None:
        kind = str(spec.preprocess.get("kind"))
        factory = ROW_DECODERS.get(kind)
        if factory is None:
            known = ", ".join(sorted(ROW_DECODERS)) or "none"
            raise ValueError(
                f"this model's rows are encoded by a '{kind}' preprocessing, which this ember cannot "
                f"decode (it knows: {known}); send rows already encoded, as lists of numbers"
            )
        return factory(spec)
    if spec.inputs.columns:
        return _by_columns(tuple(spec.inputs.columns))
    return None


def _by_columns(columns: tuple[str, ...]) -> RowDecoder:
    expected = set(columns)

    def decode(rows: Sequence[dict[str, Any]]) -> torch.Tensor:
        values = []
        for i, row in enumerate(rows):
            missing, extra = expected - row.keys(), row.keys() - expected
            if missing or extra:
                raise ValueError(
                    f"inputs.{i}: "
                    + (f"missing columns {sorted(missing)}" if missing else "")
                    + ("; " if missing and extra else "")
                    + (f"unknown columns {sorted(extra)}" if extra else "")
                    + f"; a row holds exactly {list(columns)}"
                )
            line = []
            for name in columns:
                value = row[name]
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    raise ValueError(f"inputs.{i}.{name}: expected a finite number, got {value!r}")
                line.append(float(value))
            values.append(line)
        return torch.tensor(values, dtype=torch.float32)

    return decode


def _row_encoder(spec: ModelSpec) -> RowDecoder:
    """A table run's fitted `~ember.data.RowEncoder`: categories coded, gaps filled and flagged."""
    from ember.data.tabular import RowEncoder

    assert spec.preprocess is not None
    encoder = RowEncoder.from_spec(spec.preprocess)
    return encoder.encode  # DataError (a ValueError) names the row and the column


ROW_DECODERS["row-encoder"] = _row_encoder

__all__ = ["ROW_DECODERS", "RowDecoder", "row_decoder"]
