"""The model registry: trained models as numbered versions with aliases, stored by content.

This is the *model registry* (trained, versioned models). It is unrelated to the *zoo registry* in
``ember._registry``, which maps model names to builder functions.

Layout (embedded, no server; ``$EMBER_REGISTRY`` or ``~/.ember/registry``)::

    registry.db                 SQLite: models, versions (with lineage), aliases
    blobs/sha256/<hash>         each pushed bundle once, named by the sha256 of its bytes

A version records its lineage: the run that trained it, the data fingerprint and split hashes that
run used, and the bundle's own sha256, so ``run -> data -> bundle`` can be followed both ways.
Versions are numbered 1, 2, ... per name and numbers are never reused, even after a delete.

References: ``name`` (the latest version), ``name@3`` (or ``name@v3``), ``name@latest`` and
``name@ALIAS`` (``production``, ``staging`` ...). Names match ``^[a-z0-9][a-z0-9._-]{0,63}$`` and
aliases ``^[a-z][a-z0-9_-]{0,31}$``; anything else (``../x``, ``%2e%2e%2f``, ``/abs``, ``a/b``) is
refused before it touches the database or a path. A blob is read only when it is a plain file inside
the store whose bytes hash to its name: a symlink, a path escaping the store, or a damaged blob is an
error, never silently followed.

The registry stores *sealed archives* (:mod:`ember.track.artifacts`) and verifies them without
knowing what a model is; ``ember.deploy.bundle`` gives their files a meaning.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from ember.track.artifacts import pack_archive
    >>> tmp = Path(tempfile.mkdtemp())
    >>> _ = (tmp / "m.ember").write_bytes(pack_archive({"meta.json": b"{}"}, kind="ember-bundle"))
    >>> reg = ModelRegistry(tmp / "registry")
    >>> reg.push(tmp / "m.ember", "digits-cnn").version
    1
    >>> reg.promote("digits-cnn@1", "production").aliases
    ('production',)
    >>> reg.resolve("digits-cnn@production").parent.name
    'sha256'
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ember._io import atomic_write_bytes, connect_wal
from ember._registry import did_you_mean
from ember.track.artifacts import Archive, read_archive

# --------------------------------------------------------------------------- the registry

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY, created REAL NOT NULL, next_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL REFERENCES models(name), version INTEGER NOT NULL, sha256 TEXT NOT NULL,
    size INTEGER NOT NULL, created REAL NOT NULL, run_id TEXT, data_sha256 TEXT, lineage TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX IF NOT EXISTS versions_by_sha ON versions (sha256);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (name, alias)
);
"""

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # whole strings only: fullmatch
ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_VERSION = re.compile(r"v?([1-9][0-9]{0,8})")
_SHA256 = re.compile(r"[0-9a-f]{64}")
BUNDLE_FORMAT = "ember-bundle"


class RegistryError(ValueError):
    """A name, reference or path the registry refuses, or a store that failed a check."""


class ModelNotFoundError(KeyError):
    """A reference to a model, version or alias that the registry does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def default_root() -> Path:
    """``$EMBER_REGISTRY`` or ``~/.ember/registry``."""
    env = os.environ.get("EMBER_REGISTRY")
    return Path(env) if env else Path.home() / ".ember" / "registry"


@dataclass(frozen=True)
class ModelVersion:
    """One pushed version of a named model."""

    name: str
    version: int
    sha256: str
    created: float
    run_id: str | None
    data_sha256: str | None
    aliases: tuple[str, ...] = ()
    size: int = 0
    lineage: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """``name@version``, the reference that always means this exact version."""
        return f"{self.name}@{self.version}"


def check_name(name: str) -> str:
    """``name`` when it is a valid model name, else RegistryError saying what is allowed."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise RegistryError(
            f"invalid model name {name!r}: use 1-64 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. digits-cnn); paths and '%' escapes are not names"
        )
    return name


def check_alias(alias: str) -> str:
    """``alias`` when it is a valid alias (not a version number, not ``latest``)."""
    if (
        not isinstance(alias, str)
        or not ALIAS.fullmatch(alias)
        or _VERSION.fullmatch(alias)
        or alias == "latest"
    ):
        raise RegistryError(
            f"invalid alias {alias!r}: use 1-32 lowercase letters, digits, '_' or '-', starting with a "
            "letter (e.g. production, staging); 'latest' and version numbers are reserved"
        )
    return alias


def parse_ref(ref: str) -> tuple[str, str | None]:
    """Split ``name[@selector]`` into ``(name, selector)``; both checked, nothing else accepted."""
    if not isinstance(ref, str):
        raise RegistryError(f"a model reference must be a string like 'digits-cnn@3', got {ref!r}")
    name, sep, selector = ref.partition("@")
    check_name(name)
    if not sep:
        return name, None
    if not (_VERSION.fullmatch(selector) or selector == "latest" or ALIAS.fullmatch(selector)):
        raise RegistryError(
            f"invalid reference {ref!r}: after '@' give a version (3 or v3), 'latest' or an alias "
            "(production, staging)"
        )
    return name, selector


class ModelRegistry:
    """Versions, aliases and lineage of trained models, over SQLite and a content-addressed blob store.

    Args:
        root: the store's folder (default ``$EMBER_REGISTRY`` or ``~/.ember/registry``).

    Example:
        >>> reg = ModelRegistry(tempfile.mkdtemp())  # doctest: +SKIP
        >>> reg.push("digits.ember", "digits-cnn")  # doctest: +SKIP
        ModelVersion(name='digits-cnn', version=1, ...)
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.blobs = self.root / "blobs" / "sha256"
        self.db_path = self.root / "registry.db"
        with closing(self._connect()) as db, db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = connect_wal(self.db_path, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys=ON")
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so concurrent pushes number versions correctly."""
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # ------------------------------------------------------------------ blobs

    def blob_path(self, sha256: str) -> Path:
        """The blob of ``sha256``, refused unless it is a plain file inside the store (no symlinks)."""
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise RegistryError(f"refusing blob name {sha256!r}: a blob is named by 64 lowercase hex digits")
        path = self.blobs / sha256
        root = self.root.resolve()
        for part in (self.root / "blobs", self.blobs, path):
            if part.is_symlink():
                raise RegistryError(
                    f"refusing {part}: it is a symlink, and blobs must be plain files inside the store {root}"
                )
        if not path.resolve().is_relative_to(root):
            raise RegistryError(f"refusing blob {path}: it resolves outside the store {root}")
        return path

    def _read_blob(self, sha256: str) -> bytes:
        path = self.blob_path(sha256)
        if not path.is_file():
            raise RegistryError(f"blob {sha256} is missing from {self.blobs}; the store was modified")
        data = path.read_bytes()
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise RegistryError(f"blob {path} is damaged: its sha256 is {got}; push the bundle again")
        return data

    def _write_blob(self, sha256: str, data: bytes) -> None:
        path = self.blob_path(sha256)
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256:
            return
        atomic_write_bytes(path, data)

    # ------------------------------------------------------------------ writing

    def push(self, bundle_path: str | Path, name: str) -> ModelVersion:
        """Store a bundle under ``name`` as its next version (pushing identical bytes again is a no-op).

        Args:
            bundle_path: an ``.ember`` bundle (made by ``ember package``); verified before storing.
            name: the model's name, e.g. ``digits-cnn``.

        Returns:
            The new (or already stored, identical) :class:`ModelVersion`.
        """
        check_name(name)
        path = Path(bundle_path)
        if not path.is_file():
            raise FileNotFoundError(f"no bundle file {path}; make one with `ember package RUN -o FILE`")
        data = path.read_bytes()
        archive = read_archive(data, what=f"bundle {path}")
        if archive.manifest.get("format") != BUNDLE_FORMAT:
            raise RegistryError(f"{path} is not an ember bundle (format {archive.manifest.get('format')!r})")
        lineage = _lineage(archive)
        sha = archive.sha256
        with self._write() as db:
            same = db.execute(
                "SELECT version FROM versions WHERE name = ? AND sha256 = ?", (name, sha)
            ).fetchone()
            self._write_blob(sha, data)  # also repairs a damaged blob of an identical push
            if same is not None:
                version = same["version"]
            else:
                now = time.time()
                row = db.execute("SELECT next_version FROM models WHERE name = ?", (name,)).fetchone()
                version = row["next_version"] if row else 1
                if row is None:
                    db.execute(
                        "INSERT INTO models (name, created, next_version) VALUES (?, ?, 2)", (name, now)
                    )
                else:
                    db.execute("UPDATE models SET next_version = ? WHERE name = ?", (version + 1, name))
                db.execute(
                    "INSERT INTO versions (name, version, sha256, size, created, run_id, data_sha256, lineage)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        version,
                        sha,
                        len(data),
                        now,
                        lineage["run"].get("id"),
                        lineage["data"].get("sha256"),
                        json.dumps(lineage),
                    ),
                )
        return self.show(f"{name}@{version}")

    def promote(self, ref: str, alias: str) -> ModelVersion:
        """Point ``alias`` (``production``, ``staging`` ...) of the model at the version ``ref`` names."""
        check_alias(alias)
        target = self.show(ref)
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO aliases (name, alias, version, updated) VALUES (?, ?, ?, ?)",
                (target.name, alias, target.version, time.time()),
            )
        return self.show(target.ref)

    def delete(self, ref: str, *, force: bool = False) -> builtins.list[ModelVersion]:
        """Delete the version ``ref`` names, or with a bare name and ``force`` every version.

        A version an alias points at is kept unless ``force``; blobs no version uses are removed.

        Returns:
            The deleted versions.
        """
        name, selector = parse_ref(ref)
        if selector is None:
            if not force:
                raise RegistryError(
                    f"'{name}' names every version; delete one with {name}@VERSION, or all with --force"
                )
            doomed = [v for v in self.list() if v.name == name]
            if not doomed:
                self._missing(name)
        else:
            doomed = [self.show(ref)]
        held = [v for v in doomed if v.aliases]
        if held and not force:
            v = held[0]
            raise RegistryError(
                f"{v.ref} is aliased as {', '.join(v.aliases)}; promote another version first or use --force"
            )
        with self._write() as db:
            for v in doomed:
                db.execute("DELETE FROM aliases WHERE name = ? AND version = ?", (v.name, v.version))
                db.execute("DELETE FROM versions WHERE name = ? AND version = ?", (v.name, v.version))
            used = {row[0] for row in db.execute("SELECT DISTINCT sha256 FROM versions")}
            for sha in {v.sha256 for v in doomed} - used:  # inside the lock: a push may reuse the blob
                self.blob_path(sha).unlink(missing_ok=True)
        return doomed

    # ------------------------------------------------------------------ reading

    def list(self) -> builtins.list[ModelVersion]:
        """Every version of every model, by name then version."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT * FROM versions ORDER BY name, version").fetchall()
            aliases = self._aliases(db)
        return [self._version(r, aliases) for r in rows]

    def show(self, ref: str) -> ModelVersion:
        """The version ``ref`` names (``name`` alone: the latest), with its aliases and lineage."""
        name, selector = parse_ref(ref)
        with closing(self._connect()) as db:
            if selector is None or selector == "latest":
                row = db.execute(
                    "SELECT * FROM versions WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)
                ).fetchone()
            elif m := _VERSION.fullmatch(selector):
                row = db.execute(
                    "SELECT * FROM versions WHERE name = ? AND version = ?", (name, int(m.group(1)))
                ).fetchone()
            else:
                row = db.execute(
                    "SELECT v.* FROM versions v JOIN aliases a ON a.name = v.name AND a.version = v.version"
                    " WHERE a.name = ? AND a.alias = ?",
                    (name, selector),
                ).fetchone()
            aliases = self._aliases(db)
        if row is None:
            self._missing(name, selector)
        return self._version(row, aliases)

    def versions(self, name: str) -> builtins.list[ModelVersion]:
        """Every version of one model, oldest first."""
        found = [v for v in self.list() if v.name == check_name(name)]
        if not found:
            self._missing(name)
        return found

    def resolve(self, ref: str) -> Path:
        """The stored bundle file ``ref`` names, after checking it is in the store and hashes right."""
        version = self.show(ref)
        self._read_blob(version.sha256)
        return self.blob_path(version.sha256)

    def pull(self, ref: str, out: str | Path) -> Path:
        """Copy the bundle ``ref`` names to ``out`` (a file, or a folder to put ``NAME-vN.ember`` in)."""
        version = self.show(ref)
        data = self._read_blob(version.sha256)
        target = Path(out)
        if target.is_dir():
            target = target / f"{version.name}-v{version.version}.ember"
        atomic_write_bytes(target, data)  # replaces a symlink at ``target`` instead of writing through it
        return target

    def lineage(self, ref: str) -> dict[str, Any]:
        """``run -> data -> bundle`` of the version ``ref`` names."""
        return self.show(ref).lineage

    # ------------------------------------------------------------------ helpers

    def _aliases(self, db: sqlite3.Connection) -> dict[tuple[str, int], builtins.list[str]]:
        out: dict[tuple[str, int], builtins.list[str]] = {}
        for row in db.execute("SELECT name, alias, version FROM aliases ORDER BY alias"):
            out.setdefault((row["name"], row["version"]), []).append(row["alias"])
        return out

    def _version(self, row: sqlite3.Row, aliases: dict[tuple[str, int], builtins.list[str]]) -> ModelVersion:
        return ModelVersion(
            name=row["name"],
            version=row["version"],
            sha256=row["sha256"],
            created=row["created"],
            run_id=row["run_id"],
            data_sha256=row["data_sha256"],
            aliases=tuple(aliases.get((row["name"], row["version"]), ())),
            size=row["size"],
            lineage=json.loads(row["lineage"]),
        )

    def _missing(self, name: str, selector: str | None = None) -> None:
        with closing(self._connect()) as conn:
            names = [r[0] for r in conn.execute("SELECT name FROM versions")]
            if name not in names:
                hint = did_you_mean(name, names)
                raise ModelNotFoundError(
                    f"no model '{name}' in the registry {self.root}{hint or ';'} `ember registry list` shows them"
                )
            have = [f"{r[0]}" for r in conn.execute("SELECT version FROM versions WHERE name = ?", (name,))]
            tags = [r[0] for r in conn.execute("SELECT alias FROM aliases WHERE name = ?", (name,))]
        raise ModelNotFoundError(
            f"'{name}' has no version or alias '{selector}'; versions: {', '.join(have) or 'none'}; "
            f"aliases: {', '.join(tags) or 'none'}"
        )


def _lineage(archive: Archive) -> dict[str, Any]:
    """``run -> data -> bundle`` from a bundle's ``meta.json`` (empty parts when it has none)."""
    try:
        meta = json.loads(archive.files.get("meta.json", b"{}"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RegistryError("the bundle's meta.json is not valid JSON") from None
    run = meta.get("run") or {}
    data = meta.get("data") or {}
    model = meta.get("model") or {}
    return {
        "run": {k: run.get(k) for k in ("id", "name", "config_sha256", "seed", "finished")},
        "data": {k: data.get(k) for k in ("dataset", "sha256", "pool_sha256", "splits")},
        "bundle": {
            "sha256": archive.sha256,
            "format_version": archive.manifest.get("format_version"),
            "model": model.get("name"),
            "weights_sha256": archive.manifest["files"].get("model.safetensors", {}).get("sha256"),
        },
        "code": meta.get("code") or {},
        "metrics": meta.get("metrics") or {},
    }


__all__ = [
    "ModelNotFoundError",
    "ModelRegistry",
    "ModelVersion",
    "RegistryError",
    "check_alias",
    "check_name",
    "default_root",
    "parse_ref",
]
