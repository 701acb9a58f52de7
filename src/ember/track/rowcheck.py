"""Row checksums for the run store: a flipped byte in ``ember.db`` is an error, not a wrong number.

SQLite checks its own structure but not the values in its rows: a flipped bit in a stored metric,
status or sha256 reads back as another value without a word. Every row of the run store carries
``crc``, a CRC-32 of its other columns, written with the row and checked whenever the row is read;
a run's row also counts its metric, param and artifact rows (``n_metrics`` ...), so a damaged
index that loses rows is caught too. A mismatch is a :class:`ember.track.RunStoreError` that says
to rebuild the index from the run folders. Rows of stores written before these columns existed
have them NULL and are read unchecked.

Example:
    >>> row = ("run-1", 10, 0, "train/loss", 0.25, 1.0)
    >>> row_crc(row) == row_crc(("run-1", 10, 0, "train/loss", 0.25, 1.0)), row_crc(row) == row_crc(row[:4] + (0.5, 1.0))
    (True, False)
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Sequence
from typing import Any

__all__ = ["COLUMNS", "register", "row_crc", "with_crc"]

COLUMNS = {
    "metrics": ("run_id", "step", "epoch", "name", "value", "time"),
    "params": ("run_id", "key", "value"),
    "artifacts": ("run_id", "path", "kind", "sha256", "size"),
    "runs": (
        ("id", "name", "created", "finished", "status", "folder", "config", "config_sha256", "data_sha256")
        + (
            "seed",
            "source",
            "environment",
            "headline",
            "best",
            "summary",
            "error",
            "pid",
            "host",
            "heartbeat",
        )
        + ("n_metrics", "n_params", "n_artifacts")
    ),
}
"""The columns each table's ``crc`` covers, in order."""


def row_crc(values: Sequence[Any]) -> int:
    """CRC-32 of a row's values (JSON-encoded, so 0.1 and "0.1" differ; floats round-trip exactly)."""
    return zlib.crc32(json.dumps(list(values), default=str).encode())


def with_crc(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """``rows`` with their CRC appended, ready for an INSERT that lists ``crc`` last."""
    return [(*row, row_crc(row)) for row in rows]


def register(db: sqlite3.Connection) -> None:
    """Make ``ember_crc(...)`` callable in this connection's SQL (to refresh a row after UPDATE)."""
    db.create_function("ember_crc", -1, lambda *values: row_crc(values), deterministic=True)


def refresh_sql(table: str, where: str) -> str:
    """The UPDATE that recomputes ``crc`` of the rows ``where`` selects."""
    return f"UPDATE {table} SET crc = ember_crc({', '.join(COLUMNS[table])}) WHERE {where}"


def bad_row(table: str, row: Sequence[Any], crc: int | None) -> bool:
    """Whether a row read back (its ``COLUMNS[table]`` values, in order) fails its checksum."""
    return crc is not None and row_crc(row) != crc
