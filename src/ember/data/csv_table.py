"""A user's table: a CSV file with a header row, numeric features and one target column.

A missing file, a ragged row or a cell that is not a number raises an error naming the file, the
row (counting data rows from 1) and its line in the file.

Example:
    >>> from ember.data import load_dataset
    >>> bundle = load_dataset("csv", path="houses.csv", target="price")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch

from ember.data.bundle import TASKS, ArrayData, DataBundle, DataError, existing_path
from ember.data.datasets import register_dataset

__all__ = ["csv_table"]


@register_dataset("csv")
def csv_table(
    path: str | Path,
    *,
    target: str,
    task: str | None = None,
    test_path: str | Path | None = None,
    delimiter: str = ",",
) -> DataBundle:
    """A table with a header row: every column but ``target`` is a numeric feature.

    Args:
        path: the CSV file (UTF-8, a BOM is fine).
        target: the column to predict.
        task: ``"classification"`` or ``"regression"``; by default regression when every target
            parses as a number and one is not a whole number, else classification (pass
            ``task="regression"`` for whole-number targets such as counts).
        test_path: an optional second CSV with the same columns, used as the test split.
        delimiter: the field separator.

    Returns:
        A `DataBundle` with ``x`` float32 ``(N, F)``; class labels (strings) map to indices in
        sorted order (numeric order when all are integers).

    Example:
        >>> bundle = csv_table("iris.csv", target="species")  # doctest: +SKIP
    """
    header, rows = _read_csv(existing_path(path, "CSV file"), delimiter)
    if target not in header:
        raise DataError(f"{path} has no column '{target}'; its columns are: {', '.join(header)}")
    features = [name for name in header if name != target]
    parts = [(Path(path), header, rows)]
    if test_path is not None:
        test_header, test_rows = _read_csv(existing_path(test_path, "test CSV file"), delimiter)
        missing = [name for name in [*features, target] if name not in test_header]
        if missing:
            raise DataError(f"{test_path} lacks the columns {', '.join(missing)} of {path}")
        parts.append((Path(test_path), test_header, test_rows))
    labels = [row[h.index(target)].strip() for _, h, rs in parts for _, row in rs]
    task = task or ("regression" if _all_numbers(labels) and not _all_integers(labels) else "classification")
    if task not in TASKS:
        raise DataError(f"task must be one of {TASKS}; got '{task}'")
    classes = None
    if task == "classification":
        numeric = _all_integers(labels)  # "2" before "10" when every label is a whole number
        classes = sorted(set(labels), key=lambda s: (float(s), s) if numeric else (0.0, s))
    datas = [_table(file, h, rs, features, target, classes) for file, h, rs in parts]
    return DataBundle(
        train=datas[0],
        test=datas[1] if len(datas) > 1 else None,
        num_classes=len(classes) if classes else None,
        classes=classes,
        input_shape=(len(features),),
        task=task,
        name="csv",
    )


def _read_csv(path: Path, delimiter: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
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


def _table(
    path: Path,
    header: list[str],
    rows: list[tuple[int, list[str]]],
    features: list[str],
    target: str,
    classes: list[str] | None,
) -> ArrayData:
    columns = [header.index(name) for name in features]
    where = header.index(target)
    index = {name: i for i, name in enumerate(classes or [])}
    x = np.empty((len(rows), len(features)), dtype=np.float32)
    y = np.empty(len(rows), dtype=np.int64 if classes else np.float32)
    for number, (line, row) in enumerate(rows):
        try:
            for j, column in enumerate(columns):
                x[number, j] = _number(row[column], header[column])
            y[number] = index[row[where].strip()] if classes else _number(row[where], target)
        except ValueError as error:
            raise DataError(f"{path}, row {number + 1} (line {line}): {error}") from None
    return ArrayData(torch.from_numpy(x), torch.from_numpy(y))


def _number(text: str, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"column '{column}' is {text!r}, expected a finite number")
    return value


def _all_numbers(values: list[str]) -> bool:
    try:
        return all(math.isfinite(float(v)) for v in values)
    except ValueError:
        return False


def _all_integers(values: list[str]) -> bool:
    return _all_numbers(values) and all(float(v).is_integer() for v in values)
