"""The data side of a table model: `RowEncoder` turns rows with named columns into one float tensor.

It is fitted on the training rows only (the anchors: fastai's ``Categorify`` / ``FillMissing`` /
``Normalize``) and holds everything that is about the *data*: the columns and their kinds, each
categorical column's vocabulary, each numeric column's fill value and statistics. Its JSON
(``preprocess.json`` in a run) is all a later stage needs to turn JSON rows into model inputs.

The numeric part is the model's (`ember.nn.tabular.TabularStem`): standardizing with the training
mean and std, embedding or one-hot coding the category codes. So what crosses from data to model,
and what export and serving feed the model, is one float32 tensor ``(N, F)`` laid out as

    [numeric values (missing ones filled) | missing indicators (0/1) | category codes]

where code 0 means missing or not seen in training, and code ``i + 1`` the ``i``-th category.

Example:
    >>> from ember.data.table import Table
    >>> train = Table({"age": [30, 40, None], "job": ["clerk", "cook", "clerk"]})
    >>> enc = RowEncoder.fit(train)
    >>> enc.encode([{"age": 35, "job": "cook"}, {"job": "pilot"}]).tolist()
    [[35.0, 0.0, 2.0], [35.0, 1.0, 0.0]]
    >>> RowEncoder.from_json(enc.to_json()).model_inputs()["cardinalities"]
    [3]
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ember._io import atomic_write_bytes
from ember._registry import did_you_mean
from ember.data.bundle import DataError
from ember.data.table import Table, is_missing

__all__ = ["FORMAT", "Column", "RowEncoder"]

BINS = 16  # quantile bins per numeric column (`Column.edges`)
FORMAT = "ember-row-encoder"
VERSION = 1


@dataclass(frozen=True)
class Column:
    """One input column as fitted on the training rows.

    Attributes:
        name: the column's name.
        kind: ``numeric`` or ``categorical``.
        fill: numeric: the training median, put where a value is missing.
        indicator: numeric: a 0/1 "was missing" input follows (the training rows had gaps).
        mean, std: numeric: of the filled training values (the model standardizes with them).
        edges: numeric: bin edges of the filled training values (up to `BINS` bins: where a small
            decision tree on this column splits the targets, or quantiles without targets), for
            models that encode numbers piecewise-linearly (Gorishniy et al., 2022).
        categories: categorical: code ``i + 1`` is ``categories[i]``; 0 is missing or unseen.
    """

    name: str
    kind: Literal["numeric", "categorical"]
    fill: float = 0.0
    indicator: bool = False
    mean: float = 0.0
    std: float = 1.0
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()


@dataclass
class RowEncoder:
    """Rows with named columns → float32 ``(N, F)`` model inputs (layout in the module docstring).

    Args:
        columns: the input columns, in the order their values are laid out within each part.
        target: the column the model predicts (ignored when present in a row).
        dropped: columns left out when fitting, and why (shown by ``ember init``).
    """

    columns: list[Column]
    target: str | None = None
    dropped: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ fitting

    @classmethod
    def fit(
        cls,
        table: Table,
        *,
        target: str | None = None,
        categorical: Sequence[str] = (),
        numeric: Sequence[str] = (),
        drop: Sequence[str] = (),
        max_distinct: float = 0.5,
        y: np.ndarray | None = None,
    ) -> RowEncoder:
        """Learn the columns from ``table`` (the training rows only).

        Args:
            table: the training rows.
            target: the label column, left out of the inputs.
            categorical, numeric: columns whose inferred kind to override (numbers read as
                categories, say zip codes).
            drop: columns to leave out.
            y: the training targets (class ids, or numbers for regression): bin edges then come
                from a small decision tree per numeric column (target-aware bins, Gorishniy et
                al., 2022), else from quantiles.
            max_distinct: a text column with more distinct values than this share of the rows
                (and over 50) looks like an identifier or free text and is left out unless it is
                listed in ``categorical``.
        """
        for key in [*categorical, *numeric, *drop]:
            table.column(key)
        both = set(categorical) & set(numeric)
        if both:
            raise DataError(f"columns {sorted(both)} are listed as both categorical and numeric")
        columns: list[Column] = []
        dropped: dict[str, str] = {}
        kinds = table.kinds()
        for key, values in table.columns.items():
            if key == target or key in drop:
                continue
            kind = "categorical" if key in categorical else "numeric" if key in numeric else kinds[key]
            if kind == "numeric":
                numbers = _as_numbers(values, key, table.name)
                present = numbers[~np.isnan(numbers)]
                if not len(present):
                    dropped[key] = "no values in the training rows"
                    continue
                fill = float(np.median(present))
                filled = np.where(np.isnan(numbers), fill, numbers)
                edges = _tree_edges(filled, y) if y is not None else _quantile_edges(filled)
                std = float(filled.std())
                columns.append(
                    Column(key, "numeric", fill=fill, indicator=len(present) < len(numbers),
                           mean=float(filled.mean()), std=std if std > 0 else 1.0, edges=edges)
                )  # fmt: skip
                continue
            counts = Counter(v for v in _as_texts(values) if v is not None)
            if key not in categorical and len(counts) > max(50, max_distinct * len(values)):
                dropped[key] = (
                    f"{len(counts)} distinct values in {len(values)} rows: an identifier or free text? "
                    "List it in data.categorical to keep it"
                )
                continue
            columns.append(Column(key, "categorical", categories=tuple(sorted(counts))))
        if not columns:
            raise DataError(f"{table.name} has no input columns besides the target '{target}'")
        return cls(columns, target=target, dropped=dropped)

    # ------------------------------------------------------------------ layout

    @property
    def numeric(self) -> list[Column]:
        return [c for c in self.columns if c.kind == "numeric"]

    @property
    def categorical(self) -> list[Column]:
        return [c for c in self.columns if c.kind == "categorical"]

    @property
    def width(self) -> int:
        """F, the number of values per encoded row."""
        return len(self.numeric) + sum(c.indicator for c in self.numeric) + len(self.categorical)

    def feature_names(self) -> list[str]:
        """A name for each of the F values: ``age``, ``age_missing``, ``job`` ..."""
        numeric = self.numeric
        return (
            [c.name for c in numeric]
            + [f"{c.name}_missing" for c in numeric if c.indicator]
            + [c.name for c in self.categorical]
        )

    def model_inputs(self) -> dict[str, Any]:
        """What a table model's builder takes from the data (`ember.models.tabular`)."""
        numeric = self.numeric
        return {
            "num_numeric": len(numeric),
            "num_binary": sum(c.indicator for c in numeric),
            "cardinalities": [len(c.categories) + 1 for c in self.categorical],
            "mean": [c.mean for c in numeric],
            "std": [c.std for c in numeric],
            "edges": [list(c.edges) for c in numeric],
        }

    # ------------------------------------------------------------------ encoding

    def encode(self, rows: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """JSON rows (dicts by column name) → float32 ``(N, F)``.

        A column absent from a row, None, NaN or a text such as ``""`` / ``"?"`` is missing; a
        category not seen in training gets code 0. A key that is no column is an error (a typo
        would otherwise silently read as a missing value).
        """
        known = {c.name for c in self.columns} | set(self.dropped) | ({self.target} if self.target else set())
        for number, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise DataError(
                    f"row {number}: expected an object of column: value, got {type(row).__name__}"
                )
            for key in row:
                if key not in known:
                    names = [c.name for c in self.columns]
                    raise DataError(
                        f"row {number}: unknown column '{key}'{did_you_mean(str(key), names)}; "
                        f"the columns are: {', '.join(names)}"
                    )
        return self.encode_table(Table({c.name: [row.get(c.name) for row in rows] for c in self.columns}))

    def encode_table(self, table: Table) -> torch.Tensor:
        """A `Table` (with at least the input columns) → float32 ``(N, F)``."""
        n = len(table)
        parts: list[np.ndarray] = []
        indicators: list[np.ndarray] = []
        for c in self.numeric:
            numbers = _as_numbers(table.column(c.name, "input column"), c.name, table.name)
            gaps = np.isnan(numbers)
            parts.append(np.where(gaps, c.fill, numbers))
            if c.indicator:
                indicators.append(gaps.astype(np.float64))
        codes = []
        for c in self.categorical:
            index = {name: i + 1 for i, name in enumerate(c.categories)}
            texts = _as_texts(table.column(c.name, "input column"))
            codes.append(np.fromiter((index.get(v, 0) if v else 0 for v in texts), np.float64, count=n))
        stacked = [*parts, *indicators, *codes]
        out = np.stack(stacked, axis=1) if stacked else np.zeros((n, 0))
        return torch.from_numpy(out.astype(np.float32))

    # ------------------------------------------------------------------ saving

    def to_spec(self) -> dict[str, Any]:
        """The encoder as a model spec's ``preprocess`` (``kind: row-encoder``): a bundle carries it,
        and the server encodes JSON rows with it (`ember.deploy.serve.rows`)."""
        return {"kind": "row-encoder", **json.loads(self.to_json())}

    @classmethod
    def from_spec(cls, preprocess: Mapping[str, Any]) -> RowEncoder:
        """The encoder `to_spec` described."""
        return cls.from_json(json.dumps({k: v for k, v in preprocess.items() if k != "kind"}))

    def to_json(self) -> str:
        """Everything the encoder knows, as JSON text (``preprocess.json`` in a run)."""
        body = {
            "format": FORMAT,
            "version": VERSION,
            "target": self.target,
            "columns": [_column_json(c) for c in self.columns],
            "dropped": self.dropped,
        }
        return json.dumps(body, indent=1, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RowEncoder:
        """The encoder `to_json` wrote."""
        body = json.loads(text)
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise DataError(f"not a row encoder's JSON (expected format '{FORMAT}')")
        if body.get("version") != VERSION:
            raise DataError(f"row encoder JSON version {body.get('version')}; this ember reads {VERSION}")
        columns = [
            Column(**{**c, "categories": tuple(c.get("categories", ())), "edges": tuple(c.get("edges", ()))})
            for c in body["columns"]
        ]
        return cls(columns, target=body.get("target"), dropped=dict(body.get("dropped") or {}))

    def save(self, path: str | Path) -> None:
        """Write `to_json` to ``path`` atomically (a temporary file renamed into place)."""
        atomic_write_bytes(path, self.to_json().encode())

    @classmethod
    def load(cls, path: str | Path) -> RowEncoder:
        return cls.from_json(Path(path).read_text())


def _column_json(column: Column) -> dict[str, Any]:
    body = asdict(column)
    if column.kind == "numeric":
        del body["categories"]
    else:
        for key in ("fill", "indicator", "mean", "std", "edges"):
            del body[key]
        body["categories"] = list(column.categories)
    return body


def _quantile_edges(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(e) for e in np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1))))


def _tree_edges(values: np.ndarray, y: np.ndarray) -> tuple[float, ...]:
    """The split thresholds of a decision tree of `BINS` leaves fitted from this column alone, plus its
    minimum and maximum: bins where the target changes."""
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    kind = DecisionTreeRegressor if np.issubdtype(y.dtype, np.floating) else DecisionTreeClassifier
    tree = kind(max_leaf_nodes=BINS, min_samples_leaf=max(1, len(values) // (4 * BINS)), random_state=0)
    tree.fit(values.reshape(-1, 1), y)
    inner = tree.tree_.threshold[tree.tree_.feature >= 0]  # leaves hold -2
    return tuple(float(e) for e in np.unique(np.r_[values.min(), inner, values.max()]))


def _as_numbers(values: np.ndarray, key: str, where: str) -> np.ndarray:
    """A column as float64 with NaN for missing; a text that is no number is a DataError."""
    if values.dtype == np.float64:
        return values
    out = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        if is_missing(value):
            out[i] = math.nan
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or isinstance(value, bool):
            raise DataError(f"{where}, row {i + 1}: column '{key}' is {value!r}, expected a number")
        out[i] = number
    return out


def _as_texts(values: np.ndarray) -> list[str | None]:
    """A column as category texts (numbers as ``3``, not ``3.0``), None for missing."""
    if values.dtype != np.float64:
        return [None if is_missing(v) else _category(v) for v in values]
    return [None if math.isnan(v) else _category(v) for v in values.tolist()]


def _category(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
