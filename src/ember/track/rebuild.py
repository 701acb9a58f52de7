"""Rebuild the run store's index (``ember.db``) from the run folders, which are the record.

Each run folder holds what its row needs: ``config.yaml``, ``run.json`` (the row as last written:
status, times, hashes, environment, summary, and every artifact's sha256) and ``metrics.jsonl``
(every committed metric). A folder without ``run.json`` (written by an older ember, or killed
before its first write) is indexed from ``config.yaml`` alone, status ``unknown``; its artifacts
are then hashed as they are now, which the rebuild reports. A damaged ``ember.db`` is kept beside
the new one as ``ember.db.damaged-<time>``.

Example:
    >>> import tempfile
    >>> from ember.track import RunStore
    >>> store = RunStore(tempfile.mkdtemp())
    >>> run = store.create("demo", config_yaml="name: demo\\n"); run.finish("completed")
    >>> store.db_path.unlink()
    >>> rebuild(store.root).runs, RunStore(store.root).get("latest").status
    (1, 'completed')
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ember.config import flatten
from ember.track import rowcheck
from ember.track.repro import sha256_file
from ember.track.runs import RUN_COLUMNS, SCHEMA, RunStore, run_folders

__all__ = ["RebuildReport", "rebuild"]

_KNOWN_FILES = {
    "model.safetensors": "weights",
    "tokenizer.json": "tokenizer",
    "adapters.safetensors": "adapters",
}


@dataclass
class RebuildReport:
    """What :func:`rebuild` did."""

    runs: int = 0
    metrics: int = 0
    kept_damaged: Path | None = None
    """Where the old, unreadable index went (None: there was none, or it was readable)."""
    notes: list[str] = field(default_factory=list)
    """One line per run indexed with less than its ``run.json`` (hashed now, status unknown)."""


def rebuild(root: str | Path) -> RebuildReport:
    """Write a new ``ember.db`` for the run folders under ``root`` and swap it in atomically."""
    root = Path(root)
    report = RebuildReport()
    fresh = root / f".ember.db.rebuild-{os.getpid()}"
    fresh.unlink(missing_ok=True)
    with closing(sqlite3.connect(fresh)) as db, db:
        rowcheck.register(db)
        db.executescript(SCHEMA)
        for folder in run_folders(root):
            report.metrics += _index(db, folder, report)
            report.runs += 1
    old = root / "ember.db"
    if old.exists():
        report.kept_damaged = root / f"ember.db.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
        old.rename(report.kept_damaged)
    for suffix in ("-wal", "-shm"):  # the old index's journal must not be replayed onto the new one
        (root / f"ember.db{suffix}").unlink(missing_ok=True)
    os.replace(fresh, old)
    RunStore(root)  # the new index opens (and has every column)
    return report


def _index(db: sqlite3.Connection, folder: Path, report: RebuildReport) -> int:
    config = (folder / "config.yaml").read_text()
    try:
        row: dict[str, Any] = json.loads((folder / "run.json").read_text())
        if not isinstance(row, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        row = {"status": "unknown", "artifacts": _hash_artifacts(folder)}
        report.notes.append(
            f"{folder.name}: no readable run.json ({type(e).__name__}); status unknown, files hashed now"
        )
    created = row.get("created") or (folder / "config.yaml").stat().st_mtime
    values = {k: row.get(k) for k in RUN_COLUMNS} | {
        "id": folder.name,
        "folder": folder.name,
        "name": row.get("name") or folder.name.rsplit("-", 3)[0],
        "created": created,
        "status": row.get("status") or "unknown",
    }
    for key in ("source", "environment", "summary"):  # JSON columns hold text
        if values[key] is not None and not isinstance(values[key], str):
            values[key] = json.dumps(values[key])
    columns = [*RUN_COLUMNS, "config"]
    db.execute(
        f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        [values[k] for k in RUN_COLUMNS] + [config],
    )
    db.execute(rowcheck.refresh_sql("runs", "id = ?"), (folder.name,))
    params = flatten(yaml.safe_load(config) or {})
    db.executemany(
        "INSERT INTO params (run_id, key, value, crc) VALUES (?, ?, ?, ?)",
        rowcheck.with_crc([(folder.name, k, json.dumps(v)) for k, v in params.items()]),
    )
    db.executemany(
        "INSERT OR REPLACE INTO artifacts (run_id, path, kind, sha256, size, crc) VALUES (?, ?, ?, ?, ?, ?)",
        rowcheck.with_crc(
            [
                (folder.name, a["path"], a.get("kind"), a["sha256"], a.get("size"))
                for a in row.get("artifacts") or []
            ]
        ),
    )
    count = _metrics(db, folder)
    db.execute(
        "UPDATE runs SET n_metrics = ?, n_params = ?, n_artifacts = ? WHERE id = ?",
        (count, len(params), len(row.get("artifacts") or []), folder.name),
    )
    db.execute(rowcheck.refresh_sql("runs", "id = ?"), (folder.name,))
    return count


def _hash_artifacts(folder: Path) -> list[dict[str, Any]]:
    found = []
    for name, kind in _KNOWN_FILES.items():
        path = folder / name
        if path.is_file():
            found.append(
                {"path": name, "kind": kind, "sha256": sha256_file(path), "size": path.stat().st_size}
            )
    return found


def _metrics(db: sqlite3.Connection, folder: Path) -> int:
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return 0
    rows = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line a kill cut short
        if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
            continue
        meta = {"step", "epoch", "time"}
        for name, value in entry.items():
            if name not in meta and isinstance(value, int | float) and not isinstance(value, bool):
                rows.append(
                    (folder.name, entry["step"], entry.get("epoch"), name, float(value), entry.get("time"))
                )
    db.executemany(
        "INSERT INTO metrics (run_id, step, epoch, name, value, time, crc) VALUES (?,?,?,?,?,?,?)",
        rowcheck.with_crc(rows),
    )
    return len(rows)
