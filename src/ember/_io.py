"""File and import helpers that every layer uses: atomic writes, their clean-up, optional imports.

A file ember writes (checkpoint, bundle, blob, plan, split, ONNX graph) appears whole or not at
all: the bytes go to a temporary file beside the target (``.STEM.tmp-PID-RANDOM.SUFFIX``), fsynced,
renamed over it only once they are complete, and the folder fsynced, so a reader, or a crash
mid-write, never sees half a file. A process killed mid-write leaves its temporary file;
:func:`remove_orphans` deletes those whose process is gone. Cache folders (downloads, tokenized
corpora) are published the same way, in one rename of a finished folder.

The run store and the registry are SQLite files in WAL mode, opened through `connect_wal`: when
several processes open a new one at the same moment (the ranks of a new torchrun job), all but one
are told "database is locked" at once, since SQLite's mode change does not wait on a busy
handler; `connect_wal` waits for the other process instead, as every other statement does.

An optional library (onnx, fastapi, matplotlib, sacrebleu ...) is imported by the function that
needs it, through `require`, so that ``import ember`` stays light and a missing one fails with the
``pip install`` line that brings it.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "a" / "note.txt"
    >>> atomic_write_bytes(path, b"whole")
    >>> path.read_bytes()
    b'whole'
    >>> require("json", "serve").dumps([1])
    '[1]'
    >>> remove_orphans(path.parent)
    []
"""

from __future__ import annotations

import importlib
import os
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Literal


def connect_wal(
    path: str | Path,
    *,
    timeout: float = 30.0,
    isolation_level: Literal["DEFERRED", "EXCLUSIVE", "IMMEDIATE"] | None = "DEFERRED",
) -> sqlite3.Connection:
    """A connection to the SQLite file ``path`` in WAL mode, waiting up to ``timeout`` seconds
    for other processes' locks, also while another process turns a new file to WAL."""
    db = sqlite3.connect(path, timeout=timeout, isolation_level=isolation_level)
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return db
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                db.close()
                raise
            time.sleep(0.01)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block succeeds.

    For writers that take a path (``onnx.save_model``, ``np.save``). When the block raises, the
    temporary file is removed and ``path`` keeps what it held. A symlink at ``path`` is replaced,
    not written through. The temporary name is unique to the call, so threads and processes that
    write the same path at once each leave one whole file.

    Args:
        path: the final file; its folder is created if missing.

    Yields:
        The temporary path, with the same suffix as ``path`` (some writers look at it).

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "x.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{os.urandom(4).hex()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes | Sequence[bytes | memoryview]) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    The file and then its folder are fsynced, so the new content also survives a power loss.

    Args:
        path: the final file; its folder is created if missing.
        data: the whole content, or buffers written in order (no joined copy of a large file).
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for chunk in [data] if isinstance(data, bytes | bytearray | memoryview) else data:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


TMP_FILE = re.compile(r"\..+\.tmp-(\d+)(-[0-9a-f]+)?(\.[^.]+)?")
"""A temporary file of an atomic write, and the pid of the process that writes it."""


def remove_orphans(folder: Path) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left in ``folder``; returns them.

    A temporary file whose process still runs (another writer at work) is left alone.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        m = TMP_FILE.fullmatch(path.name)
        if m and not _alive(int(m.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is writing nothing yet: the file is a dead namesake's
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid > 0
    return True


@contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``folder`` to fill; it becomes ``folder`` when the block succeeds.

    For cache entries: readers see the whole folder or none. When another process published
    ``folder`` first, its copy is kept (both hold the same content).

    Example:
        >>> import tempfile
        >>> entry = Path(tempfile.mkdtemp()) / "entry"
        >>> with atomic_folder(entry) as work:
        ...     _ = (work / "data.txt").write_text("all of it")
        >>> sorted(p.name for p in entry.iterdir())
        ['data.txt']
    """
    import shutil
    import tempfile

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.partial-"))
    try:
        yield work
        publish_folder(work, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def publish_folder(work: Path, folder: Path) -> None:
    """Move the finished folder ``work`` to ``folder`` in one rename (atomic on one file system).

    A ``folder`` that another process published first is kept.
    """
    try:
        work.rename(folder)
    except OSError:
        if not folder.is_dir():  # anything but "another process finished first" is a real error
            raise


def require(module: str, extra: str, *, what: str | None = None) -> ModuleType:
    """Import the optional ``module``, or fail with the ``pip install`` line that brings it.

    Args:
        module: a dotted module name (``"onnxruntime"``, ``"scipy.stats"``).
        extra: ember's extra that holds it (``pip install 'ember[EXTRA]'``).
        what: the feature that needs it, for the message (default: "this").

    Raises:
        ImportError: ``"<what> needs <package>: pip install 'ember[<extra>]'"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise ImportError(f"{what or 'this'} needs {package}: {pip_line(extra)}") from None


def pip_line(extra: str) -> str:
    """The command that installs ember's optional ``extra`` (``pip install 'ember[serve]'``)."""
    return f"pip install 'ember[{extra}]'"
