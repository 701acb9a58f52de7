"""The run store: every run gets a folder and a row in SQLite (``runs/ember.db``).

Layout of one run folder::

    runs/<id>/config.yaml          the resolved config
    runs/<id>/splits/*.npy         the split indices
    runs/<id>/checkpoints/         step-NNNNNN.safetensors (atomic)
    runs/<id>/metrics.jsonl        one JSON object per logged step / evaluation
    runs/<id>/model.safetensors    the final weights
    runs/<id>/run.json             the run's row and its artifacts' sha256 (what rebuilds the index)

Tables: ``runs`` (one row a run: config, hashes, environment, status, best metric, pid, host,
heartbeat), ``params`` (flattened config), ``metrics`` (run, step, epoch, name, value) and
``artifacts`` (path, sha256, size). Metric rows are buffered in memory and written in one
transaction by :meth:`Run.flush`, so logging costs the training loop nothing per step.

The run folders are the record; SQLite is their index. A deleted or damaged ``ember.db`` is
reported as a :class:`RunStoreError` that says to run ``ember runs rebuild``
(:func:`ember.track.rebuild.rebuild`), which rebuilds it from the folders. A run whose process died
without saying so (SIGKILL, a power cut) reads as ``crashed``: its pid is gone from this host, or,
seen from another host, its heartbeat (written every few seconds while it trains) stopped.

(The file is over 600 lines because the store and the run it hands out share one transaction
discipline: the schema, the row checks, the held connection of a fit and ``run.json``'s writes are
one contract, and a change to any of them has to be read beside the others.)

Example:
    >>> import tempfile
    >>> store = RunStore(tempfile.mkdtemp())
    >>> run = store.create("demo", config_yaml="name: demo\\n", params={"optim.lr": 0.1})
    >>> run.log({"train/loss": 0.5}, step=10, epoch=0); run.finish("completed")
    >>> store.get("latest").status
    'completed'
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ember._io import atomic_write_bytes, connect_wal
from ember.track import rowcheck
from ember.track.repro import sha256_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, created REAL NOT NULL, finished REAL,
    status TEXT NOT NULL, folder TEXT NOT NULL, config TEXT NOT NULL, config_sha256 TEXT,
    data_sha256 TEXT, seed INTEGER, source TEXT, environment TEXT,
    headline TEXT, best REAL, summary TEXT, error TEXT, pid INTEGER, host TEXT, heartbeat REAL, crc INTEGER,
    n_metrics INTEGER, n_params INTEGER, n_artifacts INTEGER
);
CREATE TABLE IF NOT EXISTS params (
    run_id TEXT NOT NULL REFERENCES runs(id), key TEXT NOT NULL, value TEXT, crc INTEGER,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(id), step INTEGER NOT NULL, epoch INTEGER,
    name TEXT NOT NULL, value REAL, time REAL, crc INTEGER
);
CREATE INDEX IF NOT EXISTS metrics_by_run ON metrics (run_id, name, step);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL REFERENCES runs(id), path TEXT NOT NULL, kind TEXT, sha256 TEXT NOT NULL,
    size INTEGER, crc INTEGER, PRIMARY KEY (run_id, path)
);
"""


# columns added after the first release: an older ember.db gets them on open
ADDED_COLUMNS = {
    "runs": {"pid": "INTEGER", "host": "TEXT", "heartbeat": "REAL", "crc": "INTEGER"}
    | {"n_metrics": "INTEGER", "n_params": "INTEGER", "n_artifacts": "INTEGER"},
    "metrics": {"crc": "INTEGER"},
    "params": {"crc": "INTEGER"},
    "artifacts": {"crc": "INTEGER"},
}
HEARTBEAT_S = 5.0
"""Seconds between a training run's heartbeats."""
STALE_S = 60.0
"""A run on another host whose heartbeat is older than this reads as crashed."""
RUN_COLUMNS: tuple[str, ...] = (
    "id",
    "name",
    "created",
    "finished",
    "status",
    "folder",
    "config_sha256",
    "data_sha256",
)
RUN_COLUMNS += (
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


class RunStoreError(RuntimeError):
    """The run store's index (``ember.db``) is missing or damaged; the message says how to rebuild it."""


class ArtifactError(ValueError):
    """A run's file that differs from the sha256 recorded for it; the message names it."""


class RunNotFoundError(LookupError):
    """A run reference that matches no run (or several)."""

    def __str__(self) -> str:
        return str(self.args[0])


def default_root() -> Path:
    """``$EMBER_RUNS`` or ``./runs``."""
    return Path(os.environ.get("EMBER_RUNS", "runs"))


@dataclass(frozen=True)
class RunRecord:
    """One row of the ``runs`` table, JSON columns decoded."""

    id: str
    name: str
    created: float
    finished: float | None
    status: str
    folder: Path
    config: str
    config_sha256: str | None
    data_sha256: str | None
    seed: int | None
    source: dict[str, Any]
    environment: dict[str, Any]
    headline: str | None
    best: float | None
    summary: dict[str, Any]
    error: str | None
    pid: int | None = None
    host: str | None = None
    heartbeat: float | None = None

    @property
    def duration_s(self) -> float | None:
        return None if self.finished is None else self.finished - self.created


class RunStore:
    """A folder of runs plus their SQLite index.

    Raises:
        RunStoreError: ``ember.db`` is missing while run folders exist, or damaged.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "ember.db"
        self._held: sqlite3.Connection | None = None  # see kept_open
        if not self.db_path.exists() and (orphans := run_folders(self.root)):
            raise RunStoreError(
                f"the run store index {self.db_path} is missing, but {self.root} holds {len(orphans)} run "
                f"folders; run `ember runs rebuild --runs-dir {self.root}` to rebuild it from them"
            )
        with self.db() as db:
            db.executescript(SCHEMA)
            for table, columns in ADDED_COLUMNS.items():
                have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                for name, kind in columns.items():
                    if name not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            empty = db.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
        if empty and (recorded := [f for f in run_folders(self.root) if (f / "run.json").is_file()]):
            raise RunStoreError(  # an emptied or truncated ember.db reads as a new, empty store
                f"the run store index {self.db_path} lists no runs, but {len(recorded)} run folders in "
                f"{self.root} have records; run `ember runs rebuild --runs-dir {self.root}` to rebuild it"
            )

    @contextlib.contextmanager
    def kept_open(self) -> Iterator[None]:
        """Keep one idle connection to the index open for the block (reentrant).

        Every transaction opens and closes its own connection. When the *last* connection to a
        WAL database closes, SQLite copies the log into the database, fsyncs and deletes it, and
        the next write creates it again: 10–20 ms a transaction on an ordinary disk, against 0.1 ms
        while another connection is open. A fit makes a dozen transactions (run row, artifacts,
        metrics, heartbeat), so it holds one idle connection for its length. The idle connection
        takes no lock and runs no statement after opening: what each transaction sees, and how a
        damaged index reads, is unchanged; the log is folded in when the block ends.
        """
        if self._held is not None:
            yield
            return
        try:
            self._held = self.connect()
        except sqlite3.Error:  # a locked or damaged index: the transactions themselves will say so
            yield
            return
        try:
            yield
        finally:
            held, self._held = self._held, None
            with contextlib.suppress(sqlite3.Error):
                held.close()

    def connect(self) -> sqlite3.Connection:
        db = connect_wal(self.db_path)
        rowcheck.register(db)
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @contextlib.contextmanager
    def db(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction (a write, or a read whose statements all see the same
        snapshot: a run's rows and its row counts agree); SQLite's damage errors become
        :class:`RunStoreError` naming the file and the way to rebuild it."""
        try:
            with closing(self.connect()) as db:
                if write:
                    with db:
                        yield db
                else:
                    db.execute("BEGIN")
                    try:
                        yield db
                    finally:
                        db.rollback()
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise RunStoreError(
                    f"the run store {self.db_path} stayed locked by another process for 30 s ({e}); try again"
                ) from None
            raise self.damaged(e) from None
        except sqlite3.DatabaseError as e:
            raise self.damaged(e) from None

    def damaged(self, e: Exception | str) -> RunStoreError:
        return RunStoreError(
            f"the run store index {self.db_path} is damaged ({e}); the run folders are intact: run "
            f"`ember runs rebuild --runs-dir {self.root}` to rebuild it from them"
        )

    # ------------------------------------------------------------------ writing

    def create(
        self,
        name: str,
        *,
        config_yaml: str,
        params: dict[str, Any] | None = None,
        seed: int | None = None,
        config_sha256: str | None = None,
        source: dict[str, Any] | None = None,
        environment: dict[str, Any] | None = None,
    ) -> Run:
        """Register a new run and make its folder (with ``config.yaml``)."""
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in (name or "run")).strip("-") or "run"
        run_id = f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        folder = self.root / run_id
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(config_yaml)
        now = time.time()
        with self.db() as db:
            db.execute(
                "INSERT INTO runs (id, name, created, status, folder, config, config_sha256, seed, source,"
                " environment, pid, host, heartbeat, n_metrics, n_params, n_artifacts)"
                " VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, 0)",
                (
                    run_id,
                    name,
                    now,
                    run_id,
                    config_yaml,
                    config_sha256,
                    seed,
                    json.dumps(source or {}),
                    json.dumps(environment or {}),
                    os.getpid(),
                    socket.gethostname(),
                    now,
                    len(params or {}),
                ),
            )
            db.execute(rowcheck.refresh_sql("runs", "id = ?"), (run_id,))
            db.executemany(
                "INSERT INTO params (run_id, key, value, crc) VALUES (?, ?, ?, ?)",
                rowcheck.with_crc([(run_id, k, json.dumps(v)) for k, v in (params or {}).items()]),
            )
        run = Run(self, run_id)
        run.save_record()
        return run

    def open(self, ref: str, *, resuming: bool = False) -> Run:
        """A handle to log more into an existing run; ``resuming``: this process now trains it
        (status ``running`` again, under this process's pid, so a kill reads as ``crashed``)."""
        run = Run(self, self.get(ref).id)
        if resuming:
            run.update(status="running", pid=os.getpid(), host=socket.gethostname(), heartbeat=time.time())
        return run

    # ------------------------------------------------------------------ reading

    def get(self, ref: str) -> RunRecord:
        """A run by id, unique id prefix, ``latest`` or ``latest:<name>``."""
        with self.db(write=False) as db:
            db.row_factory = sqlite3.Row
            if ref == "latest" or ref.startswith("latest:"):
                name = ref.partition(":")[2]
                sql = (
                    "SELECT * FROM runs"
                    + (" WHERE name = ?" if name else "")
                    + " ORDER BY created DESC LIMIT 1"
                )
                rows = db.execute(sql, (name,) if name else ()).fetchall()
            else:
                rows = db.execute("SELECT * FROM runs WHERE id = ?", (ref,)).fetchall()
                if not rows:
                    rows = db.execute(
                        "SELECT * FROM runs WHERE id LIKE ? ESCAPE '\\'", (_like(ref) + "%",)
                    ).fetchall()
        if not rows:
            raise RunNotFoundError(f"no run '{ref}' in {self.root}; `ember runs` lists them")
        if len(rows) > 1:
            ids = ", ".join(r["id"] for r in rows[:5])
            raise RunNotFoundError(f"'{ref}' matches {len(rows)} runs ({ids}...); give more of the id")
        return self._record(rows[0])

    def list(self, limit: int | None = None) -> builtins.list[RunRecord]:
        """Runs, newest first."""
        with self.db(write=False) as db:
            db.row_factory = sqlite3.Row
            sql = "SELECT * FROM runs ORDER BY created DESC" + (f" LIMIT {int(limit)}" if limit else "")
            return [self._record(r) for r in db.execute(sql)]

    def metrics(
        self, run_id: str, name: str | None = None
    ) -> builtins.list[tuple[int, int | None, str, float]]:
        """``(step, epoch, name, value)`` rows of a run, in step order."""
        with self.db(write=False) as db:  # the whole run's rows: their count is checked
            sql = "SELECT run_id, step, epoch, name, value, time, crc FROM metrics WHERE run_id = ?"
            rows = self._checked("metrics", db.execute(sql + " ORDER BY step, rowid", (run_id,)), db, run_id)
        return [(step, epoch, key, value) for _, step, epoch, key, value, _ in rows if name in (None, key)]

    def params(self, run_id: str) -> dict[str, Any]:
        with self.db(write=False) as db:
            rows = self._checked(
                "params",
                db.execute("SELECT run_id, key, value, crc FROM params WHERE run_id = ?", (run_id,)),
                db,
                run_id,
            )
        return {k: json.loads(v) for _, k, v in rows}

    def artifacts(self, run_id: str) -> builtins.list[tuple[str, str, str, int]]:
        """``(path, kind, sha256, size)`` of a run's recorded files."""
        with self.db(write=False) as db:
            rows = self._checked(
                "artifacts",
                db.execute(
                    "SELECT run_id, path, kind, sha256, size, crc FROM artifacts WHERE run_id = ?", (run_id,)
                ),
                db,
                run_id,
            )
        return [(path, kind, sha256, size) for _, path, kind, sha256, size in rows]

    def _checked(
        self, table: str, rows: Any, db: sqlite3.Connection, run_id: str
    ) -> builtins.list[tuple[Any, ...]]:
        """A run's rows of ``table`` (checksummed columns, then ``crc``) without the crc; a row that
        fails its checksum, or a count other than the run's row records, is an error."""
        out = []
        for *values, crc in rows:
            if rowcheck.bad_row(table, values, crc):
                raise self.damaged(f"a row of table '{table}' fails its checksum: {values[:4]}")
            out.append(tuple(values))
        cursor = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,))
        found = cursor.fetchone()
        if found is not None:
            record = dict(zip([c[0] for c in cursor.description], found))
            self._record(record)  # checks the run's row too
            expected = record.get(f"n_{table}")
            if expected is not None and expected != len(out):
                raise self.damaged(
                    f"run {run_id!r} records {expected} rows in '{table}', the index finds {len(out)}"
                )
        return out

    def verify_file(self, run_id: str, path: str) -> Path:
        """A run's file (``path`` relative to its folder), checked against the sha256 recorded for it.

        Raises:
            ArtifactError: the file differs from what the run recorded (a file with no record passes).
        """
        file = self.folder(run_id) / path
        recorded = self.artifact_sha256(run_id, path)
        if recorded is not None and file.is_file() and (got := sha256_file(file)) != recorded:
            raise ArtifactError(
                f"run {run_id}: file {file} is damaged or was modified: its sha256 is {got}, the run "
                f"recorded {recorded}. Restore it, or train again"
            )
        return file

    def artifact_sha256(self, run_id: str, path: str) -> str | None:
        """The sha256 recorded for a run's file (``path`` relative to the run folder), or None."""
        found = [a for a in self.artifacts(run_id) if a[0] == path]
        return found[0][2] if found else None

    def folder(self, run_id: str) -> Path:
        return self.root / run_id

    def _record(self, row: sqlite3.Row | dict[str, Any]) -> RunRecord:
        d = dict(row)
        if rowcheck.bad_row("runs", [d[c] for c in rowcheck.COLUMNS["runs"]], d.get("crc")):
            raise self.damaged(f"the row of run {d['id']!r} fails its checksum")
        status = d["status"]
        if status == "running" and is_dead(d.get("pid"), d.get("host"), d.get("heartbeat")):
            status = "crashed"  # its process is gone and never said how it ended
        return RunRecord(
            id=d["id"],
            name=d["name"],
            created=d["created"],
            finished=d["finished"],
            status=status,
            folder=self.root / d["folder"],
            config=d["config"],
            config_sha256=d["config_sha256"],
            data_sha256=d["data_sha256"],
            seed=d["seed"],
            source=json.loads(d["source"] or "{}"),
            environment=json.loads(d["environment"] or "{}"),
            headline=d["headline"],
            best=d["best"],
            summary=json.loads(d["summary"] or "{}"),
            error=d["error"],
            pid=d.get("pid"),
            host=d.get("host"),
            heartbeat=d.get("heartbeat"),
        )


def is_dead(pid: int | None, host: str | None, heartbeat: float | None) -> bool:
    """Whether a ``running`` run's process is gone: its pid is not alive on this host, or (another
    host) its heartbeat is older than :data:`STALE_S`. A run with neither (older stores) is not judged."""
    if pid is not None and host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except (PermissionError, OverflowError):
            return False
        return False
    return heartbeat is not None and time.time() - heartbeat > STALE_S


def recorded_sha256(folder: Path, path: str) -> str | None:
    """The sha256 a run folder's ``run.json`` records for its file ``path``, or None."""
    try:
        record = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return None
    for entry in record.get("artifacts") or [] if isinstance(record, dict) else []:
        if isinstance(entry, dict) and entry.get("path") == path:
            return entry.get("sha256")
    return None


def run_folders(root: Path) -> builtins.list[Path]:
    """The run folders under ``root`` (each holds its ``config.yaml``)."""
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "config.yaml").is_file())


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class Run:
    """A live run: buffered metric logging, artifacts with sha256, and the final status."""

    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store = store
        self.id = run_id
        self.dir = store.folder(run_id)
        self._rows: list[tuple[str, int, int | None, str, float, float]] = []
        self._beat: threading.Event | None = None
        self._batching = False  # inside one_record: run.json is written once, at its end
        self._record_due = False

    def log(self, metrics: dict[str, float], *, step: int, epoch: int | None = None) -> None:
        """Buffer metric values at ``step``; they reach disk on :meth:`flush`."""
        now = time.time()
        self._rows.extend((self.id, step, epoch, k, float(v), now) for k, v in metrics.items())

    def flush(self) -> None:
        """Write buffered metrics to SQLite (one transaction) and ``metrics.jsonl``."""
        self.write(self.take())

    def take(self) -> list[tuple[str, int, int | None, str, float, float]]:
        """Hand over the buffered rows (for :meth:`write`, perhaps on another thread)."""
        rows, self._rows = self._rows, []
        return rows

    def write(self, rows: list[tuple[str, int, int | None, str, float, float]]) -> None:
        """Write rows from :meth:`take` to SQLite (one transaction) and ``metrics.jsonl``."""
        if not rows:
            return
        with self.store.db() as db:
            db.executemany(
                "INSERT INTO metrics (run_id, step, epoch, name, value, time, crc) VALUES (?,?,?,?,?,?,?)",
                rowcheck.with_crc(rows),
            )
            db.execute("UPDATE runs SET n_metrics = n_metrics + ? WHERE id = ?", (len(rows), self.id))
            db.execute(rowcheck.refresh_sql("runs", "id = ?"), (self.id,))
        by_step: dict[tuple[int, int | None], dict[str, Any]] = {}
        for _, step, epoch, name, value, t in rows:
            by_step.setdefault((step, epoch), {"step": step, "epoch": epoch, "time": round(t, 3)})[name] = (
                value
            )
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.writelines(json.dumps(entry) + "\n" for entry in by_step.values())

    def update(self, **fields: Any) -> None:
        """Set columns of this run's row (data_sha256, headline, best, ...)."""
        allowed = {"data_sha256", "headline", "best", "status", "error", "finished", "summary"}
        allowed |= {"pid", "host", "heartbeat", "environment"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"cannot set run fields {sorted(bad)}; allowed: {sorted(allowed)}")
        for column in ("summary", "environment"):
            if column in fields:
                fields[column] = json.dumps(fields[column])
        cols = ", ".join(f"{k} = ?" for k in fields)
        recorded = [k for k in fields if k != "heartbeat"]  # run.json keeps all columns but this one
        with self.store.db() as db:
            if recorded:
                row = db.execute(
                    f"SELECT {', '.join(recorded)} FROM runs WHERE id = ?", (self.id,)
                ).fetchone()
                # a column already at its value was written to run.json by the update that set it
                recorded = [k for i, k in enumerate(recorded) if row is None or row[i] != fields[k]]
            db.execute(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), self.id))
            db.execute(rowcheck.refresh_sql("runs", "id = ?"), (self.id,))
        if recorded:
            self.save_record()

    @contextlib.contextmanager
    def one_record(self) -> Iterator[None]:
        """Write ``run.json`` once, when the block ends, for all the updates and artifacts inside it.

        Each write of ``run.json`` is atomic and fsynced (~5–10 ms); a fit's set-up and its end each
        make three in a row. The index is written at once, as always; a crash inside the block
        leaves the ``run.json`` of just before it, as a crash just before the block would.
        """
        if self._batching:
            yield
            return
        self._batching, self._record_due = True, False
        try:
            yield
        finally:
            self._batching = False
            if self._record_due:
                self.save_record()

    def save_record(self) -> None:
        """Write ``run.json``: this run's row and artifacts, what `ember runs rebuild` reads back
        (inside :meth:`one_record`, when its block ends)."""
        if self._batching:
            self._record_due = True
            return
        with self.store.db(write=False) as db:
            db.row_factory = sqlite3.Row
            row = db.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE id = ?", (self.id,)).fetchone()
            files = db.execute("SELECT path, kind, sha256, size FROM artifacts WHERE run_id = ?", (self.id,))
            artifacts = [dict(zip(("path", "kind", "sha256", "size"), f)) for f in files]
        record = {**dict(row), "artifacts": artifacts}
        atomic_write_bytes(self.dir / "run.json", (json.dumps(record, indent=1) + "\n").encode())

    def start_heartbeat(self, every_s: float = HEARTBEAT_S) -> None:
        """Mark the run ``running`` in this process and beat every ``every_s`` s until :meth:`finish`."""
        self.update(status="running", pid=os.getpid(), host=socket.gethostname(), heartbeat=time.time())
        if self._beat is not None:
            return
        stop = self._beat = threading.Event()

        def beat() -> None:
            while not stop.wait(every_s):
                try:
                    self.update(heartbeat=time.time())
                except Exception:
                    continue

        threading.Thread(target=beat, name=f"ember-heartbeat-{self.id}", daemon=True).start()

    def stop_heartbeat(self) -> None:
        if self._beat is not None:
            self._beat.set()
            self._beat = None

    def artifact(self, path: Path, kind: str) -> str:
        """Record a file of this run with its sha256 (returned); the path is stored relative to the run."""
        path = Path(path)
        digest = sha256_file(path)
        rel = str(path.resolve().relative_to(self.dir.resolve()))
        with self.store.db() as db:
            db.execute(
                "INSERT OR REPLACE INTO artifacts (run_id, path, kind, sha256, size, crc) VALUES (?, ?, ?, ?, ?, ?)",
                *rowcheck.with_crc([(self.id, rel, kind, digest, path.stat().st_size)]),
            )
            db.execute(
                "UPDATE runs SET n_artifacts = (SELECT count(*) FROM artifacts WHERE run_id = ?)"
                " WHERE id = ? AND n_artifacts IS NOT NULL",
                (self.id, self.id),
            )
            db.execute(rowcheck.refresh_sql("runs", "id = ?"), (self.id,))
        self.save_record()
        return digest

    def finish(self, status: str, *, summary: dict[str, Any] | None = None, error: str | None = None) -> None:
        """Flush, stop the heartbeat, then mark the run completed / failed / interrupted."""
        self.stop_heartbeat()
        self.flush()
        fields: dict[str, Any] = {"status": status, "finished": time.time(), "error": error}
        if summary is not None:
            fields["summary"] = summary
        self.update(**fields)
