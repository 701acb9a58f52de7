"""The sensitive attributes of a split: raw column values, one per example, in the split's order.

A data set can give them in either of two ways, and a split made by ``subset`` keeps them:

- ``data.column(name) -> (N,) values`` (a method), or
- ``data.columns``: a mapping ``{name: (N,) values}``.

A ``torch.utils.data.Subset`` of such a data set reads them through its indices. Anything else has
no columns, and asking for one says so in one line with what to do instead.

Example:
    >>> class Table:
    ...     columns = {"sex": np.array(["f", "m", "m"])}
    >>> sensitive_columns(Table(), ["sex"])["sex"].tolist()
    ['f', 'm', 'm']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class NoColumnsError(ValueError):
    """The data has no column of that name (or no columns at all)."""


def available(data: Any) -> list[str] | None:
    """Column names ``data`` offers, or None when it offers none."""
    inner = getattr(data, "dataset", None)
    if inner is not None and hasattr(data, "indices"):
        return available(inner)
    columns = getattr(data, "columns", None)
    if columns is not None and hasattr(columns, "keys"):
        return [str(k) for k in columns]
    names = getattr(data, "column_names", None)
    return list(names) if names is not None else None


def column(data: Any, name: str) -> np.ndarray:
    """``(N,)`` raw values of column ``name`` for every example of ``data`` (see the module docstring)."""
    inner = getattr(data, "dataset", None)
    if inner is not None and hasattr(data, "indices"):  # torch Subset
        return column(inner, name)[np.asarray(data.indices, dtype=np.int64)]
    reader = getattr(data, "column", None)
    if callable(reader):
        return np.asarray(reader(name))
    columns = getattr(data, "columns", None)
    if columns is not None and hasattr(columns, "keys"):
        if name not in columns:
            raise NoColumnsError(
                f"the data has no column '{name}'; its columns are: {', '.join(map(str, columns.keys()))}"
            )
        return np.asarray(columns[name])
    raise NoColumnsError(
        f"the data ({type(data).__name__}) has no columns, so it has no '{name}' to group by; fairness needs "
        "a table that keeps its columns (e.g. data.name: adult, after `ember data get adult`)"
    )


def sensitive_columns(data: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """``{name: (N,) values}`` for each of ``names`` (string-valued, as groups are named)."""
    if not names:
        raise NoColumnsError("no sensitive columns given: name them, e.g. --sensitive sex,race")
    return {name: np.asarray([str(v) for v in column(data, name)]) for name in names}


__all__ = ["NoColumnsError", "available", "column", "sensitive_columns"]
