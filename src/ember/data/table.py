"""Tables as read: named columns of numbers or strings with gaps, from CSV, Parquet or a DataFrame.

A `Table` keeps each column as read, before anything is fitted: a numeric column is float64 with
NaN where a value is missing, any other column is an object array of strings with None where a value
is missing. Column types are inferred (numeric when every present value parses as a finite number)
and can be overridden; what to learn from them is `ember.data.tabular.RowEncoder`'s job.

CSV needs nothing beyond Python; Parquet files and pandas DataFrames need the ``tables`` extra
(``pip install 'ember[tables]'``: pandas and pyarrow).

Example:
    >>> table = Table.from_rows([{"age": "39", "job": "clerk"}, {"age": "?", "job": None}])
    >>> table.kinds(), table.missing()
    ({'age': 'numeric', 'job': 'categorical'}, {'age': 1, 'job': 1})
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ember.data.bundle import DataError, existing_path

__all__ = ["MISSING", "PIP_TABLES", "Table", "is_missing", "read_csv_rows", "read_table"]

MISSING = frozenset({"", "?", "na", "n/a", "nan", "null", "none", "-"})
"""Cell texts read as a missing value (compared stripped and lower-cased)."""
PIP_TABLES = "pip install 'ember[tables]'"


def is_missing(value: Any) -> bool:
    """True for None, NaN and the texts of `MISSING`."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in MISSING


class Table:
    """Named columns of equal length: float64 (NaN = missing) or object arrays of str (None = missing).

    Args:
        columns: name → values; numbers, strings, None and the texts of `MISSING` are accepted,
            and each column becomes numeric when all its present values are finite numbers.
        name: where it came from (a file name), used in messages.
    """

    def __init__(self, columns: Mapping[str, Sequence[Any] | np.ndarray], *, name: str = "table") -> None:
        lengths = {len(values) for values in columns.values()}
        if len(lengths) > 1:
            raise DataError(f"{name}: columns differ in length ({sorted(lengths)})")
        self.name = name
        self.columns: dict[str, np.ndarray] = {key: _column(values) for key, values in columns.items()}

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], *, name: str = "table") -> Table:
        """A table from dicts (JSON rows); a key absent from a row is a missing value there."""
        rows = list(rows)
        names = list(dict.fromkeys(key for row in rows for key in row))
        return cls({key: [row.get(key) for row in rows] for key in names}, name=name)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def kinds(self) -> dict[str, str]:
        """Column → ``numeric`` or ``categorical``, as inferred."""
        return {key: "numeric" if v.dtype == np.float64 else "categorical" for key, v in self.columns.items()}

    def missing(self) -> dict[str, int]:
        """Column → number of missing values."""
        return {key: int(_missing_mask(values).sum()) for key, values in self.columns.items()}

    def take(self, index: np.ndarray | Sequence[int]) -> Table:
        """The rows at ``index``, in that order."""
        idx = np.asarray(index, dtype=np.int64)
        out = Table({}, name=self.name)
        out.columns = {key: values[idx] for key, values in self.columns.items()}
        return out

    def drop_rows(self, mask: np.ndarray) -> Table:
        """The table without the rows where ``mask`` is True."""
        return self.take(np.flatnonzero(~mask))

    def column(self, key: str, what: str = "column") -> np.ndarray:
        """One column; an unknown name is a DataError listing the columns."""
        if key not in self.columns:
            raise DataError(f"{self.name} has no {what} '{key}'; its columns are: {', '.join(self.columns)}")
        return self.columns[key]


def _column(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind in "iuf":  # typed numbers (Parquet, DataFrame): NaN stays missing
        out = array.astype(np.float64)
        if not np.isfinite(out[~np.isnan(out)]).all():
            return _strings(array.tolist())
        return out
    if array.dtype.kind == "b":
        return _strings(["true" if v else "false" for v in array.tolist()])
    items = list(values)
    numbers = np.empty(len(items), dtype=np.float64)
    for i, value in enumerate(items):
        if is_missing(value):
            numbers[i] = math.nan
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            return _strings(items)
        if not math.isfinite(number) or isinstance(value, bool):
            return _strings(items)
        numbers[i] = number
    return numbers


def _strings(items: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, value in enumerate(items):
        out[i] = None if is_missing(value) else _text(value)
    return out


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 3.0 from a float column reads as the category "3"
    return str(value).strip()


def _missing_mask(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.float64:
        return np.isnan(values)
    return np.fromiter((v is None for v in values), dtype=bool, count=len(values))


def read_csv_rows(path: Path, delimiter: str = ",") -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(line number, fields)`` of each non-blank row; a ragged row is an error."""
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file, delimiter=delimiter)
        header = [name.strip() for name in next(reader, [])]
        if not header:
            raise DataError(f"{path} is empty; expected a header row naming the columns")
        rows: list[tuple[int, list[str]]] = []
        for row in reader:
            if not any(field.strip() for field in row):
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path}, row {len(rows) + 1} (line {reader.line_num}): {len(row)} fields, "
                    f"but the header has {len(header)}"
                )
            rows.append((reader.line_num, row))
    if not rows:
        raise DataError(f"{path} has a header but no rows")
    return header, rows


def read_table(source: str | Path | Any, *, delimiter: str | None = None) -> Table:
    """A `Table` from a CSV/TSV file, a Parquet file, or a pandas DataFrame.

    Args:
        source: a ``.csv`` / ``.tsv`` / ``.txt`` file (with a header row), a ``.parquet`` file, or a
            DataFrame.
        delimiter: the CSV field separator (default: a tab for ``.tsv``, else a comma).

    Example:
        >>> read_table("houses.csv").kinds()  # doctest: +SKIP
        {'rooms': 'numeric', 'city': 'categorical', 'price': 'numeric'}
    """
    if not isinstance(source, str | Path):
        if hasattr(source, "columns") and hasattr(source, "to_numpy"):  # a pandas DataFrame
            return _from_frame(source, "DataFrame")
        raise DataError(
            f"a table is a CSV or Parquet path or a pandas DataFrame; got {type(source).__name__}"
        )
    path = existing_path(source, "table file")
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(f"reading Parquet needs pandas and pyarrow: {PIP_TABLES}") from None
        try:
            frame = pd.read_parquet(path)
        except ImportError:
            raise ImportError(f"reading Parquet needs pyarrow: {PIP_TABLES}") from None
        return _from_frame(frame, path.name)
    sep = delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")
    header, rows = read_csv_rows(path, sep)
    header = _unique(header)
    cells = list(zip(*(row for _, row in rows), strict=True))
    return Table(dict(zip(header, cells, strict=True)), name=path.name)


def _unique(header: list[str]) -> list[str]:
    """A name given twice gets ``.1`` (then ``.2`` ...) on its later copies, as pandas does."""
    seen: dict[str, int] = {}
    out = []
    for name in header:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if not count else f"{name}.{count}")
    return out


def _from_frame(frame: Any, name: str) -> Table:
    import pandas as pd  # a DataFrame came, so pandas is there

    columns: dict[str, Any] = {}
    for key in frame.columns:
        series = frame[key]
        kind = series.dtype.kind
        if kind in "iuf":
            columns[str(key)] = series.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            columns[str(key)] = [None if pd.isna(v) else v for v in series.tolist()]  # NaN, NA, NaT
    return Table(columns, name=name)
